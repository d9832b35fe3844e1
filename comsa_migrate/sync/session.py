"""The sync daemon's connections: one holding the advisory lock, one writing, and outages."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg

from comsa_migrate import __version__
from comsa_migrate.core import store
from comsa_migrate.core.backfill import BackfillOptions
from comsa_migrate.db.migrations import migrate
from comsa_migrate.db.target import POOLER_SAFE, Target, has_connect_timeout
from comsa_migrate.errors import SchemaError, first_line
from comsa_migrate.sync import bookkeeping
from comsa_migrate.sync.backoff import Backoff
from comsa_migrate.sync.lock import LockHeld, describe_holder, lock_key, try_lock, unlock
from comsa_migrate.sync.stats import SyncStats

__all__ = ["DB_ERRORS", "SyncSession"]

log = logging.getLogger(__name__)

#: what a lost or refused connection raises; everything else is a bug or a data error
DB_ERRORS = (psycopg.OperationalError,)
#: short, so that a stop request is honoured quickly even while the server is unreachable
#: (unless the DSN or PGCONNECT_TIMEOUT sets connect_timeout)
CONNECT_TIMEOUT_S = 3
#: a server that vanished without closing the connection is noticed in about half a
#: minute rather than after the kernel's retransmissions (libpq ignores these on sockets)
TCP_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


class _WaitingForLock(Exception):
    pass


class SyncSession:
    """Connects, takes the lock, and reconnects with capped exponential backoff.

    The lock lives on a connection of its own that does nothing else, so that the
    lock is held exactly as long as the daemon can write. The first connection also
    applies pending migrations and registers the daemon in comsa_migrate.daemons.
    """

    def __init__(
        self,
        target: Target,
        data_dir: str,
        *,
        name: str,
        writing: BackfillOptions,
        wait: bool,
        retry_min: float,
        retry_max: float,
        stats: SyncStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.data_dir = data_dir
        self.name = name
        self.writing = writing
        self.key = lock_key(name)
        self.wait = wait
        self._clock = clock
        self._backoff = Backoff(retry_min, retry_max, clock)
        self.conn: psycopg.Connection[Any] | None = None
        self._lock_conn: psycopg.Connection[Any] | None = None
        self.run_id: int | None = None
        self.daemon_id: int | None = None
        self.down_since: float | None = None
        self._stats = stats
        self._waiting_for: str | None = None
        ident = f"pid={os.getpid()} host={socket.gethostname()}"
        self._names = (
            f"comsa-migrate sync {ident}"[:63],
            f"comsa-migrate sync writer {ident}"[:63],
        )

    @property
    def up(self) -> bool:
        return self.conn is not None

    @property
    def next_attempt(self) -> float:
        """When ``connect()`` tries again, on the session's clock."""
        return self._backoff.next_at

    def connect(self, pending: int) -> bool:
        """One attempt, if the backoff allows it: True once connected and holding the lock.

        Raises LockHeld when another daemon holds the lock (unless waiting for it).
        """
        if self.up:
            return True
        if not self._backoff.due():
            return False
        try:
            self._open()
        except _WaitingForLock:
            self._backoff.failed()
            return False
        except DB_ERRORS as exc:
            self.lost(exc, pending)
            return False
        if self._waiting_for is None and self.down_since is not None:
            log.info(
                "the database is back after %.1f s; syncing %d pending jobs",
                self._clock() - self.down_since,
                pending,
            )
        self.down_since = None
        self._backoff.reset()
        return True

    def healthy(self) -> bool:
        """Both connections still usable: an error on them was a refusal, not an outage."""
        return all(
            conn is not None and not conn.closed and not conn.broken
            for conn in (self.conn, self._lock_conn)
        )

    def lost(self, exc: BaseException, pending: int) -> None:
        """The database went away: close both connections and plan the next attempt."""
        self._close_quietly()
        now = self._clock()
        if self.down_since is None:
            self.down_since = now
            self._stats.count("outages")
            log.warning(
                "the database is unavailable (%s); keeping %d pending jobs and retrying "
                "every %g s at most",
                self._reason(exc),
                pending,
                self._backoff.cap,
            )
            self._backoff.reset()
        else:
            log.debug("still no database: %s", self._reason(exc))
        self._backoff.failed()

    def check_lock(self) -> None:
        """Raises if the lock's connection is gone (with it, the lock)."""
        if self._lock_conn is None:
            raise psycopg.OperationalError("the lock connection is closed")
        self._lock_conn.execute("SELECT 1")

    def close(self, final: bookkeeping.Heartbeat | None, totals: dict[str, Any]) -> None:
        """Record the stop, let the lock go and close; quietly if the database is down."""
        if self.conn is not None:
            try:
                if final is not None and self.daemon_id is not None:
                    bookkeeping.finish(self.conn, self.daemon_id, final)
                if self.run_id is not None:
                    store.finish_run(self.conn, self.run_id, "stopped", totals)
                if self._lock_conn is not None:
                    unlock(self._lock_conn, self.key)
            except psycopg.Error as exc:
                log.warning("could not record the daemon's stop: %s", self._reason(exc))
        self._close_quietly()

    def _open(self) -> None:
        lock_conn = self._connection(self._names[0])
        try:
            if not try_lock(lock_conn, self.key):
                self._locked_out(describe_holder(lock_conn, self.key))
            conn = self._connection(self._names[1])
        except BaseException:
            lock_conn.close()
            raise
        try:
            self._set_up(conn)
        except BaseException as exc:
            conn.close()
            lock_conn.close()
            if isinstance(exc, psycopg.Error) and not isinstance(exc, DB_ERRORS):
                raise SchemaError(
                    f"cannot prepare {self.target} for the daemon: {self._reason(exc)}"
                ) from None
            raise
        if self._waiting_for is not None:
            log.info("took the lock for %s", self.name)
            self._waiting_for = None
        self.conn, self._lock_conn = conn, lock_conn

    def _locked_out(self, holder: str) -> None:
        message = f"another sync daemon named {self.name} holds its lock on {self.target}: {holder}"
        if not self.wait:
            raise LockHeld(f"{message} (start with --wait to wait for it)")
        if self._waiting_for != holder:
            log.warning("%s; waiting for it", message)
            self._waiting_for = holder
        raise _WaitingForLock

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        if self.daemon_id is None:
            migrate(conn)
            settings = self.writing.settings(conn)  # an unknown --owner stops the start-up
            if settings.owner_id is not None:
                store.give_owner(conn, settings.owner_id)
            self.run_id = store.start_run(conn, "sync", self.data_dir)
            self.daemon_id = bookkeeping.register(
                conn, self.run_id, self.name, self.data_dir, __version__, "starting"
            )
        store.prepare_session(conn)

    def writer_connection(self) -> psycopg.Connection[Any]:
        """One more connection for a rescan's writers (--jobs), named as the daemon's writer."""
        return self._connection(self._names[1])

    def _connection(self, application_name: str) -> psycopg.Connection[Any]:
        settings: dict[str, Any] = {
            "application_name": application_name,
            **TCP_KEEPALIVE,
            **POOLER_SAFE,
        }
        if not has_connect_timeout(self.target.dsn):
            settings["connect_timeout"] = CONNECT_TIMEOUT_S
        return psycopg.connect(self.target.dsn, autocommit=True, **settings)

    def _close_quietly(self) -> None:
        for conn in (self.conn, self._lock_conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing a broken connection may raise; it is gone either way
                    log.debug("closing a connection failed", exc_info=True)
        self.conn = self._lock_conn = None

    def _reason(self, exc: BaseException) -> str:
        return first_line(exc, dsn=self.target.dsn)
