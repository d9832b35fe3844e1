"""`comsa-migrate status`: what the sync daemons last recorded, read without writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from comsa_migrate.core.summary import ACTIONS
from comsa_migrate.sync.lock import lock_held_by_anyone, lock_key

__all__ = ["DaemonStatus", "ProblemRow", "Status", "read_status", "render_status"]

_DAEMONS = """
SELECT id, COALESCE(to_jsonb(d)->>'name', hostname || ':' || data_dir) AS name,
       data_dir, hostname, pid, version, state, started_at, stopped_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_s,
       last_sync_at, extract(epoch FROM now() - last_sync_at)::float8 AS last_sync_age_s,
       last_job_id::text, last_action, last_lag_ms, queue_depth,
       extract(epoch FROM now() - oldest_pending_at)::float8 AS oldest_pending_s,
       actions, counters
FROM comsa_migrate.daemons d ORDER BY started_at DESC, id DESC LIMIT %s
"""
_PROBLEMS = """
SELECT seen_at, severity, code, job_id, path, message, daemon_id
FROM comsa_migrate.daemon_problems ORDER BY seen_at DESC, id DESC LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    id: int
    name: str  # keys the daemon's lock (schema/004 added it; older rows get the default)
    data_dir: str
    hostname: str
    pid: int
    version: str
    state: str
    running: bool  # not stopped, and someone holds its lock
    started_at: datetime
    stopped_at: datetime | None
    heartbeat_age_s: float
    last_sync_at: datetime | None
    last_sync_age_s: float | None
    last_job_id: str | None
    last_action: str | None
    last_lag_ms: int | None
    queue_depth: int
    oldest_pending_s: float | None  # how long the oldest waiting job has waited: the lag
    actions: dict[str, int]
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class ProblemRow:
    seen_at: datetime
    severity: str
    code: str
    job_id: str | None
    path: str | None
    message: str
    daemon_id: int


@dataclass(frozen=True, slots=True)
class Status:
    installed: bool  # False: no daemon ever ran here (schema/003_sync.sql not applied)
    daemons: tuple[DaemonStatus, ...]
    problems: tuple[ProblemRow, ...]


def read_status(conn: psycopg.Connection[Any], *, daemons: int = 5, problems: int = 10) -> Status:
    """The latest daemons, newest first, and the latest problems they recorded."""
    exists = conn.execute("SELECT to_regclass('comsa_migrate.daemons') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return Status(False, (), ())
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_DAEMONS, [daemons]).fetchall()
        problem_rows = cur.execute(_PROBLEMS, [problems]).fetchall()
    found = []
    for row in rows:
        running = row["stopped_at"] is None and lock_held_by_anyone(conn, lock_key(row["name"]))
        del row["heartbeat_at"]
        found.append(DaemonStatus(running=running, **row))
    return Status(True, tuple(found), tuple(ProblemRow(**row) for row in problem_rows))


def render_status(status: Status, target: str) -> str:
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
            lines.append(f"  {_time(p.seen_at)}  {p.severity:<7} {p.code:<18} {where}: {p.message}")
    else:
        lines.append("No problems recorded.")
    return "\n".join(lines) + "\n"


def _daemon_lines(d: DaemonStatus) -> list[str]:
    if d.running:
        how = f"running, {d.state.replace('_', ' ')}"
    elif d.stopped_at is None:
        how = "not running (no lock held: killed or disconnected)"
    else:
        how = f"{'stopped' if d.state == 'stopped' else d.state} at {_time(d.stopped_at)}"
    lines = [
        "",
        f"  daemon {d.id}   {d.data_dir}",
        f"    name        {d.name}",
        f"    state       {how}",
        f"    process     pid {d.pid} on {d.hostname}, comsa-migrate {d.version}, "
        f"started {_time(d.started_at)}",
        f"    heartbeat   {_age(d.heartbeat_age_s)} ago",
    ]
    if d.last_sync_at is not None and d.last_sync_age_s is not None:
        lag = "" if d.last_lag_ms is None else f", {d.last_lag_ms} ms after its first event"
        lines.append(
            f"    last sync   {_time(d.last_sync_at)} ({_age(d.last_sync_age_s)} ago): "
            f"{d.last_job_id} {d.last_action}{lag}"
        )
    else:
        lines.append("    last sync   none yet")
    if d.queue_depth and d.oldest_pending_s is not None:
        waiting = f"{d.queue_depth} jobs waiting, the oldest for {_age(d.oldest_pending_s)}"
    else:
        waiting = "nothing waiting"
    lines.append(f"    lag         {waiting}")
    counts = ", ".join(f"{d.actions.get(a, 0)} {_past(a)}" for a in ACTIONS if a != "metadata_only")
    lines.append(f"    jobs        {counts}")
    if d.counters:
        counters = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(d.counters.items()))
        lines.append(f"    counters    {counters}")
    return lines


def _past(action: str) -> str:
    return {
        "insert": "inserted",
        "update": "updated",
        "skip": "skipped",
        "conflict": "conflicts",
    }.get(action, action)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
