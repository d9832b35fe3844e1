"""The sync daemon's rows in comsa_migrate.daemons and daemon_problems (schema/003_sync.sql)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from comsa_migrate.problems import Problem
from comsa_migrate.sync.stats import LastSync

__all__ = ["Heartbeat", "finish", "heartbeat", "record_problems", "register"]

#: problems older than this are pruned when a daemon starts
PROBLEM_RETENTION = "30 days"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a daemon says about itself each time it checks in."""

    state: str
    queue_depth: int = 0
    oldest_pending_at: datetime | None = None
    last: LastSync | None = None  # the last job synced
    actions: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


def register(
    conn: psycopg.Connection[Any], run_id: int, name: str, data_dir: str, version: str, state: str
) -> int:
    """A row for this daemon. Rows of earlier daemons of the same name that never said
    goodbye (killed, host lost) are closed: whoever holds the lock is the only live one."""
    conn.execute(
        "UPDATE comsa_migrate.daemons SET state = 'lost', stopped_at = heartbeat_at"
        " WHERE name = %s AND stopped_at IS NULL",
        [name],
    )
    conn.execute(
        "DELETE FROM comsa_migrate.daemon_problems"
        f" WHERE seen_at < now() - interval '{PROBLEM_RETENTION}'"
    )
    row = conn.execute(
        "INSERT INTO comsa_migrate.daemons"
        " (run_id, name, data_dir, hostname, pid, version, state)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [run_id, name, data_dir, socket.gethostname(), os.getpid(), version, state],
    ).fetchone()
    assert row is not None
    return int(row[0])


_HEARTBEAT = """
UPDATE comsa_migrate.daemons SET
    heartbeat_at = now(), state = %(state)s, queue_depth = %(queue_depth)s,
    oldest_pending_at = %(oldest_pending_at)s,
    last_sync_at = COALESCE(%(last_sync_at)s, last_sync_at),
    last_job_id = COALESCE(%(last_job_id)s::uuid, last_job_id),
    last_action = COALESCE(%(last_action)s, last_action),
    last_lag_ms = COALESCE(%(last_lag_ms)s, last_lag_ms),
    actions = %(actions)s, counters = %(counters)s
    {stopped}
WHERE id = %(id)s
"""


def heartbeat(conn: psycopg.Connection[Any], daemon_id: int, beat: Heartbeat) -> None:
    conn.execute(_HEARTBEAT.format(stopped=""), _params(daemon_id, beat))


def finish(conn: psycopg.Connection[Any], daemon_id: int, beat: Heartbeat) -> None:
    conn.execute(_HEARTBEAT.format(stopped=", stopped_at = now()"), _params(daemon_id, beat))


def record_problems(
    conn: psycopg.Connection[Any], daemon_id: int, problems: Iterable[Problem]
) -> None:
    rows = [(daemon_id, str(p.severity), p.code, p.job_id, p.path, p.message) for p in problems]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO comsa_migrate.daemon_problems"
            " (daemon_id, severity, code, job_id, path, message) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


def _params(daemon_id: int, beat: Heartbeat) -> dict[str, Any]:
    last = beat.last
    return {
        "id": daemon_id,
        "state": beat.state,
        "queue_depth": beat.queue_depth,
        "oldest_pending_at": beat.oldest_pending_at,
        "last_sync_at": None if last is None else datetime.fromtimestamp(last.at, UTC),
        "last_job_id": None if last is None else last.job_id,
        "last_action": None if last is None else last.action,
        "last_lag_ms": None if last is None else last.lag_ms,
        "actions": Jsonb(beat.actions),
        "counters": Jsonb(beat.counters),
    }
