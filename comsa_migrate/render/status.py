"""`comsa-migrate status` as text: each sync daemon's state, last sync, jobs, lag, problems."""

from __future__ import annotations

from comsa_migrate.render.words import actions_done, age, counted, utc_time
from comsa_migrate.sync.status import DaemonStatus, Status

__all__ = ["render_status"]


def render_status(status: Status, target: str) -> str:
    """The daemons newest first, then the last problems they recorded; ends with a newline."""
    if not status.installed or not status.daemons:
        return f"No sync daemon has run against {target}.\n"
    lines = [f"Sync daemons on {target}, newest first"]
    for daemon in status.daemons:
        lines.extend(_daemon_lines(daemon))
    lines.append("")
    if status.problems:
        lines.append("Last problems")
        for p in status.problems:
            where = " ".join(part for part in (p.job_id, p.path) if part) or "-"
            lines.append(
                f"  {utc_time(p.seen_at)}  {p.severity:<7} {p.code:<18} {where}: {p.message}"
            )
    else:
        lines.append("No problems recorded.")
    return "\n".join(lines) + "\n"


def _daemon_lines(d: DaemonStatus) -> list[str]:
    if d.running:
        how = f"running, {d.state.replace('_', ' ')}"
    elif d.stopped_at is None:
        how = "not running (no lock held: killed or disconnected)"
    else:
        how = f"{'stopped' if d.state == 'stopped' else d.state} at {utc_time(d.stopped_at)}"
    lines = [
        "",
        f"  daemon {d.id}   {d.data_dir}",
        f"    name        {d.name}",
        f"    state       {how}",
        f"    process     pid {d.pid} on {d.hostname}, comsa-migrate {d.version}, "
        f"started {utc_time(d.started_at)}",
        f"    heartbeat   {age(d.heartbeat_age_s)} ago",
    ]
    if d.last_sync_at is not None and d.last_sync_age_s is not None:
        lag = "" if d.last_lag_ms is None else f", {d.last_lag_ms} ms after its first event"
        lines.append(
            f"    last sync   {utc_time(d.last_sync_at)} ({age(d.last_sync_age_s)} ago): "
            f"{d.last_job_id} {d.last_action}{lag}"
        )
    else:
        lines.append("    last sync   none yet")
    if d.queue_depth and d.oldest_pending_s is not None:
        waiting = (
            f"{counted(d.queue_depth, 'job')} waiting, the oldest for {age(d.oldest_pending_s)}"
        )
    else:
        waiting = "nothing waiting"
    lines.append(f"    lag         {waiting}")
    lines.append(f"    jobs        {actions_done(d.actions)}")
    if d.counters:
        counters = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(d.counters.items()))
        lines.append(f"    counters    {counters}")
    return lines
