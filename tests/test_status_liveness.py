"""`status` says a daemon runs only when it does: by its lease, by its process where that
process would be (this host), and by its heartbeat where it cannot be looked up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from comsa_migrate.sync.lock import Process, take
from comsa_migrate.sync.status import SILENT_AFTER_S, read_status

HERE = socket.gethostname()
ELSEWHERE = f"not-{HERE}"
NAME = "web2:/srv/comsa/backend/data"
FRESH, STALE = 1.0, SILENT_AFTER_S + 240


@pytest.fixture
def pids() -> Iterator[dict[str, int]]:
    """A pid that lives (this process), one that is gone, and a zombie (killed, not reaped)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # dead, and left unreaped
    yield {"alive": os.getpid(), "gone": ended.pid, "zombie": zombie.pid}
    zombie.wait()


def _lease(conn: psycopg.Connection[Any], host: str, pid: int) -> None:
    """A lease held for the daemon, as its process took it (where that process ran is not
    recorded: as a daemon in another container of the same host name has it)."""
    assert take(conn, NAME, Process(uuid.uuid4(), host, pid, None, None), 600)


def _record(dsn: str, host: str, pid: int, heartbeat_age_s: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO comsa_migrate.daemons"
            " (name, data_dir, hostname, pid, version, state, heartbeat_at)"
            " VALUES (%s, '/srv/comsa/backend/data', %s, %s, '0.2.0', 'watching',"
            " now() - make_interval(secs => %s))",
            [NAME, host, pid, heartbeat_age_s],
        )


@pytest.mark.parametrize(
    ("host", "pid", "heartbeat_age_s", "locked", "liveness"),
    [
        # on another host, nothing is known of its process: the lock, then the heartbeat
        (ELSEWHERE, "gone", FRESH, True, "running"),
        (ELSEWHERE, "alive", STALE, True, "silent"),
        (ELSEWHERE, "alive", FRESH, False, "unlocked"),
        # on this host, a process gone settles it...
        (HERE, "gone", STALE, True, "gone"),
        (HERE, "gone", FRESH, False, "gone"),
        (HERE, "zombie", STALE, True, "gone"),
        # ...unless the lock is held and the heartbeat goes on (another container that
        # shares the host name)
        (HERE, "gone", FRESH, True, "running"),
        # a process of that pid proves nothing (pids are reused): the lock must be held
        (HERE, "alive", FRESH, False, "unlocked"),
        # a process that holds its lock runs, however long a rescan keeps it from beating
        (HERE, "alive", STALE, True, "running"),
    ],
)
def test_a_daemon_runs_only_if_its_lock_its_process_and_its_heartbeat_allow(
    dsn: str,
    pids: dict[str, int],
    host: str,
    pid: str,
    heartbeat_age_s: float,
    locked: bool,
    liveness: str,
) -> None:
    _record(dsn, host, pids[pid], heartbeat_age_s)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if locked:  # as a daemon on a lost host left it behind
            _lease(conn, host, pids[pid])
        (daemon,) = read_status(conn).daemons

    assert daemon.liveness == liveness
    assert daemon.running == (liveness == "running")


def test_status_says_a_daemon_on_another_host_silent_for_minutes_is_not_running(
    dsn: str, cli: Any
) -> None:
    _record(dsn, ELSEWHERE, os.getpid(), 600)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _lease(conn, ELSEWHERE, os.getpid())
    result = cli("status", "--dsn", dsn)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        "    state       not running (last heartbeat 10 min ago; its lease is still held)"
    ) in lines
    assert not any(line.startswith("    heartbeat") for line in lines)


def test_status_says_a_daemon_without_its_lock_is_not_running(dsn: str, cli: Any) -> None:
    _record(dsn, ELSEWHERE, os.getpid(), 5)

    result = cli("status", "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert (
        "    state       not running: its lease is free, killed or disconnected"
        " (last heartbeat 5 s ago)"
    ) in result.stdout.splitlines()
