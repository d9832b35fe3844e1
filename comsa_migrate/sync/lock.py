"""One sync daemon per database and daemon name: a PostgreSQL session advisory lock."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import psycopg

from comsa_migrate.errors import LockHeld

__all__ = [
    "LockHeld",
    "default_name",
    "describe_holder",
    "lock_key",
    "lock_held_by_anyone",
    "try_lock",
]


_HOLDER = """
SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""


def default_name(data_dir: str | os.PathLike[str]) -> str:
    """A daemon's name unless --name gives one: its host name and the data folder's real path.

    Each dashboard pod has its own backend/data at the same path: the host name keeps
    two pods from locking each other out.
    """
    return f"{socket.gethostname()}:{os.path.realpath(data_dir)}"


def lock_key(name: str) -> int:
    """The advisory lock key of a daemon's name: a 64-bit hash of it.

    Hashed here rather than with the server's hashtext(), whose values may change
    between PostgreSQL versions, so that `status` can find the lock from the name.
    """
    digest = hashlib.blake2b(f"comsa-migrate sync\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    """Take the session lock if it is free; held until ``conn`` closes."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", [key])


def lock_held_by_anyone(conn: psycopg.Connection[Any], key: int) -> bool:
    return conn.execute(_HOLDER, _halves(key)).fetchone() is not None


def describe_holder(conn: psycopg.Connection[Any], key: int) -> str:
    """Who holds the lock, as pg_locks and pg_stat_activity tell it."""
    row = conn.execute(_HOLDER, _halves(key)).fetchone()
    if row is None:
        return "a session that has since let it go"
    pid, application, client, since = row
    parts = [application or "an unnamed session", f"server pid {pid}"]
    parts.append(f"from {client}" if client else "over a local socket")
    if since is not None:
        parts.append(f"connected since {since:%Y-%m-%d %H:%M:%S %Z}".rstrip())
    return ", ".join(parts)


def _halves(key: int) -> list[int]:
    """pg_locks shows a bigint key as two unsigned 32-bit halves: classid and objid."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return [unsigned >> 32, unsigned & 0xFFFF_FFFF]
