"""The sync daemon: mirror each new or changed legacy job into PostgreSQL within a second."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from watchdog.observers.api import BaseObserver

from comsa_migrate.core import tree
from comsa_migrate.core.layout import os_reason
from comsa_migrate.db.faults import is_server_fault
from comsa_migrate.db.target import Target
from comsa_migrate.db.writes import BatchStopped
from comsa_migrate.errors import ComsaMigrateError, ConfigurationError
from comsa_migrate.file_store.keeping import ContentsNotStored
from comsa_migrate.sync import bookkeeping
from comsa_migrate.sync.backoff import Backoff
from comsa_migrate.sync.debounce import Debouncer
from comsa_migrate.sync.inotify_signals import BLIND_RESCAN_S, signals_heard
from comsa_migrate.sync.job_syncer import JobSyncer
from comsa_migrate.sync.lock import default_name
from comsa_migrate.sync.log_text import PLAIN_WORDS, LogWords
from comsa_migrate.sync.metrics import MetricsServer, StatsCollector, daemon_gauges
from comsa_migrate.sync.options import SyncOptions
from comsa_migrate.sync.rescan import Rescans
from comsa_migrate.sync.session import SyncSession
from comsa_migrate.sync.stats import StatsSnapshot, SyncStats
from comsa_migrate.sync.store_outage import StoreOutage
from comsa_migrate.sync.tree_guard import TreeGuard
from comsa_migrate.sync.watch import (
    JobEventHandler,
    WatchBudget,
    WatchError,
    observer_alive,
    start_observer,
    stop_observer,
)

__all__ = ["Daemon", "SyncOptions"]

log = logging.getLogger(__name__)


class Daemon:
    """``run()`` syncs until ``stop()``; the thread that calls ``run()`` is the only writer.

    Pipeline: watchdog's observer thread -> JobEventHandler (path -> job id) ->
    Debouncer (per-job deadlines, one Condition) -> this worker, which owns the
    database connections and syncs due jobs through the backfill's path.
    """

    def __init__(
        self, target: Target, options: SyncOptions, *, words: LogWords = PLAIN_WORDS
    ) -> None:
        """``words`` give the log lines their counts (the CLI hands render.formatting)."""
        self.target = target
        self._words = words
        self.options = options
        self.root = os.path.realpath(options.data_dir)
        self.name = options.name or default_name(self.root)
        self.ready = threading.Event()  # set once the catch-up scan is done and it is watching
        self._stats = SyncStats()  # what the heartbeat, the stop and the metrics report
        self.state = "starting"
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._flags_lock = threading.Lock()
        self._restart_observer = False
        self._debouncer = Debouncer(options.debounce, max_delay=max(2.0, 10 * options.debounce))
        self._pending: dict[str, float] = {}  # due, waiting for the database: id -> first event
        self._session = SyncSession(
            target,
            self.root,
            name=self.name,
            write=options.write,
            wait=options.wait,
            retry_min=options.retry_min,
            retry_max=options.retry_max,
            stats=self._stats,
            lease_ttl=options.lease_ttl,
            renew_every=min(options.heartbeat_interval, options.lease_ttl / 3),
            on_lease_lost=self._lease_lost,
            words=words,
        )
        self._syncer = JobSyncer(
            Path(self.root),
            options.write,
            scan_processes=options.scan_processes,
            unparsable_grace=options.unparsable_grace,
            stats=self._stats,
            retry=self._debouncer.add,
        )
        self._observer: BaseObserver | None = None
        vanish = options.vanish_fraction, options.vanish_min_jobs
        self._tree = TreeGuard(Path(self.root), *vanish, time.monotonic, words)
        self._next_beat = 0.0
        self._last_beat = 0.0
        self._next_observer_check = 0.0
        self._watch_budget = WatchBudget(options.polling)
        parts = (self._syncer, self._session, self._stats, self._tree)
        self._rescans = Rescans(*parts, options.rescan_interval, self._stop, words=words)
        #: the pause after an unexpected error, doubled while it recurs
        self._error_backoff = Backoff(options.retry_min, options.retry_max)
        self._store = StoreOutage(Backoff(options.retry_min, options.retry_max), self._stats, words)

    # -- control, from any thread (signal handlers included) -----------------------------

    def stop(self) -> None:
        self._stop.set()
        self._debouncer.wake()

    def request_rescan(self, reason: str = "requested") -> None:
        self._rescans.request(reason)
        self._debouncer.wake()

    @property
    def queue_depth(self) -> int:
        return len(self._debouncer) + len(self._pending)

    def stats(self) -> dict[str, int]:
        """Jobs by action since start, and the daemon's counters, in one snapshot."""
        return self._stats.snapshot().flat()

    @property
    def database_up(self) -> bool:
        return self._session.up

    @property
    def observer(self) -> BaseObserver | None:
        """The running watchdog observer (replaced when it is restarted)."""
        return self._observer

    # -- what the observer reports (observer thread) --------------------------------------

    def job_changed(self, job_id: str) -> None:
        self._debouncer.add(job_id)

    def json_named_in_other_case(self, job_id: str) -> None:
        self._syncer.json_named_in_other_case(job_id)

    def job_json_removed(self, job_id: str) -> None:
        self._stats.count("json_removed")
        log.warning(
            "%s: its job JSON was removed; the job stays in the database",
            job_id,
            extra={"job_id": job_id},
        )
        self._tree_changed()

    def tree_changed(self, reason: str) -> None:
        log.warning("%s", reason)
        self._tree_changed()

    def folder_created(self) -> None:
        self._watch_budget.folder_created()

    def events_lost(self, reason: str) -> None:
        log.warning("%s: restarting the observer and rescanning %s", reason, self.root)
        with self._flags_lock:  # before the rescan is asked for: it must follow the restart
            self._restart_observer = True
        self.request_rescan(reason)

    # -- the worker --------------------------------------------------------------------

    def run(self) -> None:
        """Sync until stopped. Raises LockHeld, or another ComsaMigrateError at start-up."""
        tree.check_data_dir(Path(self.root))
        server = self._start_metrics()
        try:
            while not self._stop.is_set() and not self._session.connect(self.queue_depth):
                self._debouncer.wait(self._session.next_attempt)
            if self._stop.is_set():
                return
            self._observer = self._new_observer()
            while not self._stop.is_set():
                try:
                    self._step()
                except ComsaMigrateError:
                    raise
                except Exception:
                    self._unexpected_error()
                else:
                    self._error_backoff.reset()
        finally:
            self._shut_down(server)

    def _step(self) -> None:
        now = time.monotonic()
        self._take_due()
        if not self._session.connect(self.queue_depth):
            self._debouncer.wait(self._session.next_attempt)
            return
        missing = False
        try:
            missing = self._tree_is_missing()
            if not missing:
                self._look_after_observer(now)
                if self._store.due():  # no batch while a failing object store pauses
                    self._rescan_if_due(now)
                    if self._pending:
                        self._sync_pending()
            if time.monotonic() >= self._next_beat:
                self._beat()
        except BatchStopped as stopped:  # a fault of the server (its disk full): an outage
            if not isinstance(stopped, ContentsNotStored) or stopped.database:
                self._session.lost(stopped, self.queue_depth)
                return
            self._store.failed(stopped.cause, self.queue_depth)  # the session is kept
        except psycopg.Error as exc:
            if self._session.healthy() and not is_server_fault(exc.sqlstate):  # refused
                log.error("the database refused a request: %s", exc)
                self._stats.error()
            else:
                self._session.lost(exc, self.queue_depth)
            return
        if missing:
            self._debouncer.wait(time.monotonic() + 1.0)  # a vanished mount sends no events
        elif not self._store.due():  # new events still wake it, and are queued
            self._debouncer.wait(min(self._next_beat, self._store.next_at, self._tree.next_check))
        elif not self._pending:
            self._debouncer.wait(min(self._next_beat, self._rescans.next_at, self._tree.next_check))

    def _unexpected_error(self) -> None:
        """A bug met by the worker: logged with its traceback and counted, then a pause
        (doubling while it recurs) and on; it never ends the daemon."""
        self._stats.error()
        delay = self._error_backoff.failed()
        log.exception("unexpected error in the sync loop; going on in %.1f s", delay)
        self._debouncer.wait(self._error_backoff.next_at)

    def _take_due(self) -> None:
        for job_id, first_seen in self._debouncer.pop_due(100_000):
            self._pending.setdefault(job_id, first_seen)

    def _sync_pending(self) -> None:
        batch = list(itertools.islice(self._pending.items(), self.options.write.batch_size))
        self._syncer.sync(self._session.conn, self._session.run_id, batch)  # type: ignore[arg-type]
        self._store.recovered()
        for job_id, _ in batch:
            del self._pending[job_id]
        self._record_problems()
        if time.monotonic() - self._last_beat >= 1.0:
            self._beat()

    def _rescan_if_due(self, now: float) -> None:
        reason = self._rescans.due(now)
        if reason is None:
            return
        # the scan reads every job as it is now: what waited is covered, and what changes
        # from here on sends events of its own (after an overflow, this halves the work)
        self._debouncer.clear()
        self._pending.clear()
        catching_up = not self.ready.is_set()
        if catching_up:
            self._set_state("catching_up")
        summary = self._rescans.run(reason, now, catching_up=catching_up)
        if summary is None:
            return
        self._store.recovered()
        self._record_problems()
        if catching_up and not summary.interrupted:
            self._set_state("watching")
            self.ready.set()
            log.info("watching %s", self.root)

    def _look_after_observer(self, now: float) -> None:
        with self._flags_lock:
            restart, self._restart_observer = self._restart_observer, False
        if not restart and (now < self._next_observer_check or observer_alive(self._observer)):
            return
        self._next_observer_check = now + self.options.heartbeat_interval
        if not restart:
            log.warning("the file observer stopped; restarting it and rescanning %s", self.root)
            self.request_rescan("observer died")
        stop_observer(self._observer)
        self._observer = None
        self._stats.count("observer_restarts")
        try:
            self._observer = self._new_observer()
        except WatchError as exc:
            every = self.options.heartbeat_interval
            log.error("%s; rescanning every %g s until it works", exc, every)
            self._rescans.no_later_than(now + every)

    def _new_observer(self) -> BaseObserver:
        handler = JobEventHandler(self.root, self)
        return start_observer(self.root, handler, polling=self.options.polling)

    # -- a tree that disappears ---------------------------------------------------------

    def _tree_changed(self) -> None:
        self._tree.suspect()
        self._debouncer.wake()

    def _tree_is_missing(self) -> bool:
        """Most of the tree gone at once (an unmounted share): stop syncing until it returns."""
        verdict = self._tree.check()
        if verdict == "missing":
            self._set_state("tree_missing")
        elif verdict == "returned":
            self._set_state("watching")
            with self._flags_lock:
                self._restart_observer = True
            self._rescans.request("tree returned")
        return verdict == "missing"

    # -- bookkeeping --------------------------------------------------------------------

    def _lease_lost(self) -> None:
        """From the lease's thread: the next heartbeat, at once, says what to do."""
        self._next_beat = 0.0
        self._debouncer.wake()

    def _record_problems(self) -> None:
        problems = self._syncer.unrecorded_problems()
        if problems and self._session.conn is not None and self._session.daemon_id is not None:
            bookkeeping.record_problems(self._session.conn, self._session.daemon_id, problems)
            self._syncer.problems_recorded(len(problems))

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._next_beat = 0.0

    def _heartbeat(self, stats: StatsSnapshot) -> bookkeeping.Heartbeat:
        waiting = [self._debouncer.oldest_first_seen(), *self._pending.values()]
        oldest = min((t for t in waiting if t is not None), default=None)
        ago = None if oldest is None else timedelta(seconds=time.monotonic() - oldest)
        return bookkeeping.Heartbeat(
            state=self.state,
            queue_depth=self.queue_depth,
            oldest_pending_at=None if ago is None else datetime.now(UTC) - ago,
            last=stats.last,
            actions=stats.actions,
            counters=stats.counters,
        )

    def _beat(self) -> None:
        now = time.monotonic()
        if self._watch_budget.exhausted(now):
            self._rescans.no_later_than(now + 60)  # new folders go unwatched
        if not self.options.polling and not signals_heard():
            self._rescans.no_later_than(now + BLIND_RESCAN_S)  # overflows go unheard
        self._session.check_lock()
        if self._session.conn is not None and self._session.daemon_id is not None:
            beat = self._heartbeat(self._stats.snapshot())
            bookkeeping.heartbeat(self._session.conn, self._session.daemon_id, beat)
        self._last_beat = time.monotonic()
        self._next_beat = self._last_beat + self.options.heartbeat_interval

    def _start_metrics(self) -> MetricsServer | None:
        if self.options.metrics_port is None:
            return None
        gauges = daemon_gauges(
            lambda: self.queue_depth,
            lambda: observer_alive(self._observer),
            lambda: self._session.up,
            lambda: self._tree.missing_since is None,
        )
        collector = StatsCollector(self._stats, gauges)
        try:
            server = MetricsServer(collector, self.options.metrics_port)
        except OSError as exc:  # a port taken or refused is a setting, not a bug
            raise ConfigurationError(
                f"--metrics-port {self.options.metrics_port}: {os_reason(exc)} on 127.0.0.1"
            ) from None
        server.start()
        self.metrics_port = server.port
        return server

    def _shut_down(self, server: MetricsServer | None) -> None:
        if self._session.daemon_id is not None:
            log.info("stopping")
        stop_observer(self._observer)
        self._observer = None
        self._take_due()
        if self._pending:
            log.warning(
                "stopping with %s not synced; the next start's catch-up scan syncs them",
                self._words.counted(len(self._pending), "job"),
            )
        self.state = "stopped"
        stats = self._stats.snapshot()
        final = self._heartbeat(stats) if self._session.up else None
        if self._session.up:
            with contextlib.suppress(psycopg.Error):  # the stop is recorded below if it can be
                self._record_problems()
        registered = self._session.daemon_id is not None
        self._session.close(final, stats.totals())
        if server is not None:
            server.stop()
        if registered:
            log.info("stopped")
