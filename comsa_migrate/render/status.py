"""`comsa-migrate status` as text: each sync daemon's state, last sync, jobs, lag, problems."""

from __future__ import annotations

from comsa_migrate.render.formatting import actions_done, age, counted, number, utc_time
from comsa_migrate.sync.status import DaemonStatus, Status

__all__ = ["render_status"]

#: a daemon that did not record its stop, by what says it is not running (sync/status.py)
_NOT_RUNNING = {
    "gone": "stopped: its process is gone, killed or crashed ({last})",
    "unlocked": "not running: its lease is free, killed or disconnected ({last})",
    "silent": "not running ({last}; its lease is still held)",
}


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


def _state(d: DaemonStatus) -> str:
    if d.running:
        return f"running, {d.state.replace('_', ' ')}"
    if d.stopped_at is not None:
        return f"{'stopped' if d.state == 'stopped' else d.state} at {utc_time(d.stopped_at)}"
    return _NOT_RUNNING[d.liveness].format(last=f"last heartbeat {age(d.heartbeat_age_s)} ago")


def _daemon_lines(d: DaemonStatus) -> list[str]:
    lines = [
        "",
        f"  daemon {d.id}   {d.data_dir}",
        f"    name        {d.name}",
        f"    state       {_state(d)}",
        f"    process     pid {d.pid} on {d.hostname}, comsa-migrate {d.version}, "
        f"started {utc_time(d.started_at)}",
    ]
    if d.running:  # of a daemon that does not run, the state says when it was last heard of
        lines.append(f"    heartbeat   {age(d.heartbeat_age_s)} ago")
    if d.last_sync_at is not None and d.last_sync_age_s is not None:
        lag = "" if d.last_lag_ms is None else f", {number(d.last_lag_ms)} ms after its first event"
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
        counters = ", ".join(
            f"{k.replace('_', ' ')} {number(v)}" for k, v in sorted(d.counters.items())
        )
        lines.append(f"    counters    {counters}")
    return lines
