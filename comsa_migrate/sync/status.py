"""What the sync daemons last recorded, read without writing anything (render/status.py
writes it out for `comsa-migrate status`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from comsa_migrate.sync.lock import earlier_version_holder, lease_holders
from comsa_migrate.sync.processes import exists

__all__ = ["SILENT_AFTER_S", "DaemonStatus", "Liveness", "ProblemRow", "Status", "read_status"]

#: how long a daemon may go without a heartbeat before it is taken for gone although its
#: lease is still held (the lease is renewed on a thread of its own, so a daemon whose
#: main loop hangs keeps it). Many heartbeats (5 s apart by default), because a full
#: rescan does not beat while it runs.
SILENT_AFTER_S = 60.0

#: what the records and the server say of a daemon: ``running``; ``stopped`` (it recorded
#: its stop, or a later daemon of its name found it gone); ``gone`` (not stopped, but its
#: process on this host is gone: killed or crashed); ``unlocked`` (not stopped, but
#: nobody holds its lease: killed, or cut off from the database); ``silent`` (its lease
#: is held, but it has not beaten for SILENT_AFTER_S: its host is down or cut off, or
#: the daemon hangs)
Liveness = Literal["running", "stopped", "gone", "unlocked", "silent"]

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
    name: str  # keys the daemon's lease (schema/004 added it; older rows get the default)
    data_dir: str
    hostname: str
    pid: int
    version: str
    state: str
    liveness: Liveness
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

    @property
    def running(self) -> bool:
        return self.liveness == "running"


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
    holders = _lease_holders(conn)
    found = []
    for row in rows:
        del row["heartbeat_at"]
        found.append(DaemonStatus(liveness=_liveness(conn, row, holders), **row))
    return Status(True, tuple(found), tuple(ProblemRow(**row) for row in problem_rows))


def _liveness(
    conn: psycopg.Connection[Any], row: dict[str, Any], holders: set[tuple[str, str, int]]
) -> Liveness:
    """Whether a daemon runs, from its record, its lease and, on this host, its process.

    A process id is only looked up on the host that recorded it, and a process found
    there proves nothing by itself (the id may have been reused since): only its lease
    held says a daemon runs. A process gone settles it, unless the daemon holds its lease
    and still beats (another container may share this host name). Of a daemon on another
    host, only the heartbeat tells whether it is still alive behind its lease.
    """
    if row["stopped_at"] is not None:
        return "stopped"
    locked = (row["name"], row["hostname"], row["pid"]) in holders or (
        earlier_version_holder(conn, row["name"]) is not None
    )
    silent = row["heartbeat_age_s"] > SILENT_AFTER_S
    here = row["hostname"] == socket.gethostname()
    if here and not (locked and not silent) and not exists(row["pid"]):
        return "gone"
    if not locked:
        return "unlocked"
    if silent and not here:
        return "silent"
    return "running"


def _lease_holders(conn: psycopg.Connection[Any]) -> set[tuple[str, str, int]]:
    """Who holds a lease; none before schema/006 (daemons of earlier versions held a
    session advisory lock instead)."""
    exists = conn.execute("SELECT to_regclass('comsa_migrate.daemon_leases') IS NOT NULL")
    return lease_holders(conn) if exists.fetchone() == (True,) else set()
