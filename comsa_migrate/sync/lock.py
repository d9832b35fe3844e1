"""One sync daemon per database and daemon name: a lease in comsa_migrate.daemon_leases
(schema/006_daemon_lease.sql), which holds through a pooler in transaction mode."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from comsa_migrate.errors import LockHeld
from comsa_migrate.sync import processes

__all__ = [
    "LEASE_TTL_S",
    "Holder",
    "LeaseKeeper",
    "LockHeld",
    "Process",
    "default_name",
    "earlier_version_holder",
    "holder",
    "lease_holders",
    "lock_key",
    "release",
    "renew",
    "take",
]

log = logging.getLogger(__name__)

#: how long a lease lasts unless renewed: a daemon that died elsewhere is waited out this long
LEASE_TTL_S = 30.0

_TAKE = """
INSERT INTO comsa_migrate.daemon_leases AS lease
    (name, token, hostname, pid, pid_start, host_scope, expires_at)
VALUES (%(name)s, %(token)s, %(hostname)s, %(pid)s, %(pid_start)s, %(host_scope)s,
        now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET
    token = excluded.token, hostname = excluded.hostname, pid = excluded.pid,
    pid_start = excluded.pid_start, host_scope = excluded.host_scope,
    acquired_at = CASE WHEN lease.token = excluded.token THEN lease.acquired_at ELSE now() END,
    renewed_at = now(), expires_at = excluded.expires_at
WHERE lease.token = excluded.token OR lease.expires_at <= now()
   OR lease.token = %(instead_of)s::uuid
RETURNING lease.token
"""
_RENEW = """
UPDATE comsa_migrate.daemon_leases
SET renewed_at = now(), expires_at = now() + make_interval(secs => %s)
WHERE name = %s AND token = %s RETURNING token
"""
_HOLDER = """
SELECT token, hostname, pid, pid_start, host_scope, acquired_at,
       extract(epoch FROM now() - renewed_at)::float8
FROM comsa_migrate.daemon_leases WHERE name = %s
"""
#: a session advisory lock on lock_key(name): how daemons before the lease held their name
_EARLIER_VERSION = """
SELECT a.application_name, a.pid
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


@dataclass(frozen=True, slots=True)
class Process:
    """A daemon process as its lease records it."""

    token: uuid.UUID  # drawn once per daemon: its lease is "ours" again after an outage
    hostname: str
    pid: int
    pid_start: int | None  # in clock ticks after boot, where /proc tells it
    host_scope: str | None  # where pid names one process: boot id and pid namespace

    @classmethod
    def this_one(cls) -> Process:
        pid = os.getpid()
        started, scope = processes.start_ticks(pid), processes.host_scope()
        return cls(uuid.uuid4(), socket.gethostname(), pid, started, scope)

    def gone(self) -> bool:
        """True only when this process is known to have ended: it ran where this one runs
        (same boot, same pid namespace) and its pid is free, a zombie, or another process's."""
        if self.host_scope is None or self.host_scope != processes.host_scope():
            return False
        try:
            return processes.start_ticks(self.pid) != self.pid_start
        except PermissionError:  # /proc hides other users' processes: cannot tell
            return False


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease, and since when."""

    process: Process
    acquired_at: datetime
    renewed_s_ago: float

    def __str__(self) -> str:
        since = f"{self.acquired_at:%Y-%m-%d %H:%M:%S %Z}".rstrip()
        return (
            f"comsa-migrate sync pid={self.process.pid} host={self.process.hostname}, "
            f"holding it since {since}, renewed {self.renewed_s_ago:.0f} s ago"
        )


def take(
    conn: psycopg.Connection[Any],
    name: str,
    me: Process,
    ttl: float,
    *,
    instead_of: uuid.UUID | None = None,
) -> bool:
    """Take the lease of ``name`` if it is free, expired, ours, or held by ``instead_of``.

    One statement: two daemons taking it at once are ordered by the row's lock, and the
    second finds the first's lease.
    """
    row = conn.execute(
        _TAKE,
        {
            "name": name,
            "token": me.token,
            "hostname": me.hostname,
            "pid": me.pid,
            "pid_start": me.pid_start,
            "host_scope": me.host_scope,
            "ttl": ttl,
            "instead_of": instead_of,
        },
    ).fetchone()
    return row is not None


def renew(conn: psycopg.Connection[Any], name: str, token: uuid.UUID, ttl: float) -> bool:
    """Push the lease's expiry ``ttl`` seconds on; False when it is not ours any more."""
    return conn.execute(_RENEW, [ttl, name, token]).fetchone() is not None


def release(conn: psycopg.Connection[Any], name: str, token: uuid.UUID) -> None:
    """Let the lease go, if it is still ours."""
    conn.execute(
        "DELETE FROM comsa_migrate.daemon_leases WHERE name = %s AND token = %s", [name, token]
    )


def holder(conn: psycopg.Connection[Any], name: str) -> Holder | None:
    """Who holds the lease of ``name`` (expired or not); None when nobody does."""
    row = conn.execute(_HOLDER, [name]).fetchone()
    if row is None:
        return None
    token, hostname, pid, pid_start, host_scope, acquired_at, renewed_s_ago = row
    return Holder(Process(token, hostname, pid, pid_start, host_scope), acquired_at, renewed_s_ago)


def lease_holders(conn: psycopg.Connection[Any]) -> set[tuple[str, str, int]]:
    """(name, host name, pid) of every lease not expired whose process is not known to
    have ended (a daemon killed on this host leaves its lease until it expires)."""
    rows = conn.execute(
        "SELECT name, token, hostname, pid, pid_start, host_scope"
        " FROM comsa_migrate.daemon_leases WHERE expires_at > now()"
    ).fetchall()
    held = set()
    for name, token, hostname, pid, pid_start, scope in rows:
        if not Process(token, hostname, pid, pid_start, scope).gone():
            held.add((name, hostname, int(pid)))
    return held


def lock_key(name: str) -> int:
    """The session advisory lock key by which daemons before the lease held ``name``."""
    digest = hashlib.blake2b(f"comsa-migrate sync\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def earlier_version_holder(conn: psycopg.Connection[Any], name: str) -> str | None:
    """A daemon of an earlier version that holds ``name`` by its advisory lock, described."""
    unsigned = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows two 32-bit halves
    row = conn.execute(_EARLIER_VERSION, [unsigned >> 32, unsigned & 0xFFFF_FFFF]).fetchone()
    if row is None:
        return None
    application, pid = row
    return f"{application or 'an unnamed session'}, server pid {pid} (an earlier version)"


class LeaseKeeper:
    """Renews a lease every ``every`` seconds, on its own connection and thread, so that
    the lease lasts through a catch-up or a batch that takes longer than its TTL.

    It stops at the first renewal that fails and calls ``on_lost``; ``check()`` then
    raises LockHeld (another daemon took the lease) or the connection's error.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        me: Process,
        ttl: float,
        every: float,
        on_lost: Callable[[], None],
    ) -> None:
        self.conn = conn
        self._name = name
        self._me = me
        self._ttl = ttl
        self._every = every
        self._on_lost = on_lost
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="comsa-migrate-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def check(self) -> None:
        """Raises what ended the renewals, if anything did."""
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Stop renewing (the lease stays until released or expired)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2)

    def _run(self) -> None:
        while not self._stopping.wait(self._every):
            try:
                if renew(self.conn, self._name, self._me.token, self._ttl):
                    continue
                found = holder(self.conn, self._name)
                if found is None and take(self.conn, self._name, self._me, self._ttl):
                    continue  # deleted by hand: nobody else holds it
                self._failure = LockHeld(str(found))
            except psycopg.Error as exc:
                self._failure = exc
            if not self._stopping.is_set():
                self._on_lost()
            return
