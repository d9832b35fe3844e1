"""The sync daemon's full scans of DATA_DIR: the catch-up at start-up, the periodic ones,
and those asked for (SIGHUP, lost events, an observer restarted, a tree come back)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from comsa_migrate.db.faults import is_server_fault
from comsa_migrate.db.writes import BatchStopped
from comsa_migrate.errors import ComsaMigrateError, DataDirError
from comsa_migrate.pipeline.summary import Summary
from comsa_migrate.sync.job_syncer import JobSyncer
from comsa_migrate.sync.log_text import PLAIN_WORDS, LogWords
from comsa_migrate.sync.session import SyncSession
from comsa_migrate.sync.stats import SyncStats
from comsa_migrate.sync.tree_guard import TreeGuard

__all__ = ["RESCAN_RETRY_S", "Rescans"]

log = logging.getLogger(__name__)

#: how soon a rescan that failed on an unexpected error is tried again
RESCAN_RETRY_S = 60.0


class Rescans:
    """When the next rescan is due and why, and running it through the syncer.

    ``request()`` may be called from any thread; the rest runs on the daemon's worker.
    A rescan is due at start-up (the catch-up), every ``interval`` seconds, and when
    asked for; the reasons waiting when one starts are all met by it.
    """

    def __init__(
        self,
        syncer: JobSyncer,
        session: SyncSession,
        stats: SyncStats,
        tree: TreeGuard,
        interval: float,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        words: LogWords = PLAIN_WORDS,
    ) -> None:
        self._syncer = syncer
        self._words = words
        self._session = session
        self._stats = stats
        self._tree = tree
        self.interval = interval
        self._stop = stop
        self._clock = clock
        self._lock = threading.Lock()
        self._reasons: list[str] = ["start-up"]
        self.next_at = clock() + interval  # the next periodic one, on the clock

    def request(self, reason: str) -> None:
        with self._lock:
            self._reasons.append(reason)

    def no_later_than(self, at: float) -> None:
        self.next_at = min(self.next_at, at)

    def due(self, now: float) -> str | None:
        """Why a rescan is due now (the first reason asked for, or periodic), or None."""
        with self._lock:
            reasons, self._reasons = self._reasons, []
        if now >= self.next_at:
            reasons.append("periodic")
        return reasons[0] if reasons else None

    def run(self, reason: str, now: float, *, catching_up: bool) -> Summary | None:
        """One rescan; None when it could not be done, and the next one is planned.

        Raises psycopg.Error when the database refused it or went away, and BatchStopped on
        a fault of the server (after planning it again), and DataDirError when the catch-up
        cannot read the tree.
        """
        try:
            return self._rescan(reason, catching_up)
        except BatchStopped:  # a fault of the server: again as soon as it is over
            with self._lock:
                self._reasons.insert(0, reason)
            raise
        except psycopg.Error as exc:
            if self._session.healthy() and not is_server_fault(exc.sqlstate):  # refused
                # the next periodic rescan tries again
                self.next_at = now + self.interval
            else:
                with self._lock:  # not done: again once the database is back
                    self._reasons.insert(0, reason)
            raise
        except ComsaMigrateError:
            raise
        except Exception:
            # a bug: tried again a minute later, and the jobs the observer reports are
            # still synced meanwhile
            retry = min(RESCAN_RETRY_S, self.interval)
            log.exception("rescan (%s) failed; trying again in %g s", reason, retry)
            self._stats.error()
            self.next_at = now + retry
            return None

    def _rescan(self, reason: str, catching_up: bool) -> Summary | None:
        started = self._clock()
        self._stats.rescan(reason)
        try:
            summary = self._syncer.rescan(
                self._session.conn,  # type: ignore[arg-type]
                self._session.run_id,
                self._stop,
                self._session.writer_connection,
            )
        except DataDirError as exc:
            if catching_up:
                raise
            log.error("rescan failed: %s", exc)
            self._tree.suspect()
            return None
        self.next_at = self._clock() + self.interval
        self._tree.scanned()
        log.info(
            "rescan (%s)%s: %s, %s in %.2f s",
            reason,
            " stopped part-way" if summary.interrupted else "",
            self._words.counted(summary.jobs, "job"),
            self._words.actions_done(summary.actions),
            self._clock() - started,
        )
        return summary
