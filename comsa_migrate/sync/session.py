"""The sync daemon's connections: one keeping its lease, one writing, and outages."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import psycopg

from comsa_migrate.db import runs
from comsa_migrate.db.failures import never_works
from comsa_migrate.db.grants import require_job_write_rights
from comsa_migrate.db.migrations import migrate
from comsa_migrate.db.target import (
    POOLER_SAFE,
    Target,
    first_line_without_password,
    has_connect_timeout,
)
from comsa_migrate.db.writes import give_owner
from comsa_migrate.errors import DatabaseUnavailable, SchemaError
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.sync import bookkeeping, lock
from comsa_migrate.sync.backoff import Backoff
from comsa_migrate.sync.lock import LeaseKeeper, LockHeld, Process
from comsa_migrate.sync.log_text import PLAIN_WORDS, LogWords
from comsa_migrate.sync.stats import SyncStats
from comsa_migrate.version import __version__

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
    """Connects, takes the lease, and reconnects with capped exponential backoff.

    The lease (sync/lock.py) is a row: its first connection applies pending migrations,
    takes it, and then keeps renewing it on a thread of its own (LeaseKeeper) while the
    second connection writes and registers the daemon in comsa_migrate.daemons. Every
    statement stands alone, so it all works through a pooler in transaction mode.

    A setting that can never work (see db/failures.py) stops the start-up; once a
    connection has been made, every failure to connect is an outage, waited out.
    """

    def __init__(
        self,
        target: Target,
        data_dir: str,
        *,
        name: str,
        write: WriteOptions,
        wait: bool,
        retry_min: float,
        retry_max: float,
        stats: SyncStats,
        lease_ttl: float = lock.LEASE_TTL_S,
        renew_every: float = 5.0,
        on_lease_lost: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        words: LogWords = PLAIN_WORDS,
    ) -> None:
        self.target = target
        self._words = words
        self.data_dir = data_dir
        self.name = name
        self.write = write
        self.wait = wait
        self._clock = clock
        self._backoff = Backoff(retry_min, retry_max, clock)
        self.conn: psycopg.Connection[Any] | None = None
        self._keeper: LeaseKeeper | None = None
        self._me = Process.this_one()
        self._lease = (lease_ttl, renew_every, on_lease_lost)
        self._migrated = False
        self._reached = False  # a connection was made once: the settings work
        self.run_id: int | None = None
        self.daemon_id: int | None = None
        self.down_since: float | None = None
        self._stats = stats
        self._waiting_for: str | None = None  # the holder waited for, by its token
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
        """One attempt, if the backoff allows it: True once connected and holding the lease.

        Raises LockHeld when another daemon holds the lease (unless waiting for it), and
        DatabaseUnavailable when no connection was ever made and the settings never can.
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
            if not self._reached and never_works(exc):
                reason = self._reason(exc)
                raise DatabaseUnavailable(f"cannot connect to {self.target}: {reason}") from None
            self.lost(exc, pending)
            return False
        if self._waiting_for is None and self.down_since is not None:
            log.info(
                "the database is back after %.1f s; syncing %s pending",
                self._clock() - self.down_since,
                self._words.counted(pending, "job"),
            )
        self.down_since = None
        self._backoff.reset()
        return True

    def healthy(self) -> bool:
        """Both connections still usable: an error on them was a refusal, not an outage."""
        return all(
            conn is not None and not conn.closed and not conn.broken
            for conn in (self.conn, None if self._keeper is None else self._keeper.conn)
        )

    def lost(self, exc: BaseException, pending: int) -> None:
        """The database went away: close both connections and plan the next attempt."""
        self._close_quietly()
        now = self._clock()
        if self.down_since is None:
            self.down_since = now
            self._stats.count("outages")
            log.warning(
                "the database is unavailable (%s); keeping %s pending and retrying "
                "every %g s at most",
                self._reason(exc),
                self._words.counted(pending, "job"),
                self._backoff.cap,
            )
            self._backoff.reset()
        else:
            log.debug("still no database: %s", self._reason(exc))
        self._backoff.failed()

    def check_lock(self) -> None:
        """At each heartbeat: raises if the lease's connection is gone (an outage).

        A lease found taken by another daemon raises LockHeld, or with --wait stops
        writing (both connections closed) and waits for the lease again as a standby.
        """
        if self._keeper is None:
            raise psycopg.OperationalError("the lease's connection is closed")
        try:
            self._keeper.check()
        except psycopg.Error:
            # the lease is not being renewed, whatever the reason: handled as an outage
            # (reconnect and take it again), never as a refusal to go on from
            self._keeper.conn.close()
            raise
        except LockHeld as exc:
            message = f"the sync daemon named {self.name} lost its lock on {self.target} to {exc}"
            if not self.wait:
                raise LockHeld(f"{message}; it stopped writing") from None
            log.warning("%s; it stops writing and waits for it", message)
            self._close_quietly()
            self.daemon_id = self.run_id = None  # registered again once it holds the lease
            self._waiting_for = ""

    def close(self, final: bookkeeping.Heartbeat | None, totals: dict[str, Any]) -> None:
        """Record the stop, let the lease go and close; quietly if the database is down."""
        if self.conn is not None:
            try:
                if final is not None and self.daemon_id is not None:
                    bookkeeping.finish(self.conn, self.daemon_id, final)
                if self.run_id is not None:
                    runs.finish_run(self.conn, self.run_id, "stopped", totals)
            except psycopg.Error as exc:
                log.warning("could not record the daemon's stop: %s", self._reason(exc))
        if self._keeper is not None:
            self._keeper.stop()
            try:
                lock.release(self._keeper.conn, self.name, self._me.token)
            except psycopg.Error as exc:
                log.warning(
                    "could not let the lock go (it expires %g s after its last renewal): %s",
                    self._lease[0],
                    self._reason(exc),
                )
        self._close_quietly()

    def _open(self) -> None:
        opened: list[psycopg.Connection[Any]] = []
        taken = False
        try:
            lease_conn = self._connection(self._names[0])
            opened.append(lease_conn)
            with self._refusals():
                if not self._migrated:
                    migrate(lease_conn)
                    self._migrated = True
                self._take_lease(lease_conn)
                taken = True
                conn = self._connection(self._names[1])
                opened.append(conn)
                self._set_up(conn)
        except BaseException:
            if taken and not lease_conn.broken:
                with contextlib.suppress(psycopg.Error):
                    lock.release(lease_conn, self.name, self._me.token)
            for opened_conn in opened:
                opened_conn.close()
            raise
        if self._waiting_for is not None:
            log.info("took the lock for %s", self.name)
            self._waiting_for = None
        ttl, every, on_lost = self._lease
        self._keeper = LeaseKeeper(lease_conn, self.name, self._me, ttl, every, on_lost)
        self._keeper.start()
        self.conn = conn

    def _take_lease(self, conn: psycopg.Connection[Any]) -> None:
        """Take the lease, or take over one whose holder is known to be gone."""
        earlier = lock.earlier_version_holder(conn, self.name)
        if earlier is not None:
            self._locked_out(earlier, "earlier version")
        ttl = self._lease[0]
        if lock.take(conn, self.name, self._me, ttl):
            return
        found = lock.holder(conn, self.name)
        stale = found.process.token if found is not None and found.process.gone() else None
        if (found is None or stale is not None) and lock.take(
            conn, self.name, self._me, ttl, instead_of=stale
        ):
            if found is not None:
                log.warning(
                    "took over the lock for %s from a process that is gone: %s", self.name, found
                )
            return
        found = lock.holder(conn, self.name)
        if found is None:
            self._locked_out("a daemon that has since let it go", "")
        else:
            self._locked_out(str(found), str(found.process.token))

    def _locked_out(self, holder: str, key: str) -> NoReturn:
        message = f"another sync daemon named {self.name} holds its lock on {self.target}: {holder}"
        if not self.wait:
            raise LockHeld(f"{message} (start with --wait to wait for it)")
        if self._waiting_for != key:
            log.warning("%s; waiting for it", message)
            self._waiting_for = key
        raise _WaitingForLock

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """A refusal while starting (not an outage) is a SchemaError naming the reason."""
        try:
            yield
        except psycopg.Error as exc:
            if isinstance(exc, DB_ERRORS):
                raise
            reason = self._reason(exc)
            raise SchemaError(f"cannot prepare {self.target} for the daemon: {reason}") from None

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        if self.daemon_id is None:
            settings = self.write.settings(conn)  # an unknown --owner stops the start-up
            require_job_write_rights(conn, inputs=settings.store_inputs)  # as does a right
            if settings.owner_id is not None:
                give_owner(conn, settings.owner_id, self.write.limits)
            self.run_id = runs.start_run(conn, "sync", self.data_dir)
            self.daemon_id = bookkeeping.register(
                conn, self.run_id, self.name, self.data_dir, __version__, "starting"
            )

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
        conn = psycopg.connect(self.target.dsn, autocommit=True, **settings)
        self._reached = True
        return conn

    def _close_quietly(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        for conn in (self.conn, None if keeper is None else keeper.conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing a broken connection may raise; it is gone either way
                    log.debug("closing a connection failed", exc_info=True)
        self.conn = None

    def _reason(self, exc: BaseException) -> str:
        return first_line_without_password(exc, self.target.dsn)
