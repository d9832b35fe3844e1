"""The daemon's use of the backfill's path, for one job or a rescan; half-written JSON held back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core import tree
from comsa_migrate.core.layout import JOBS, JobSource, ScanItem
from comsa_migrate.core.payload import WriteSettings
from comsa_migrate.db.faults import is_server_fault
from comsa_migrate.db.writes import BatchStopped
from comsa_migrate.observer import JobResult
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.pipeline.scheduler import Connect, applying, run_batches
from comsa_migrate.pipeline.summary import Summary
from comsa_migrate.problems import Problem, Severity
from comsa_migrate.sync.backoff import Backoff
from comsa_migrate.sync.stats import SyncStats

__all__ = ["JobSyncer"]

log = logging.getLogger(__name__)

#: first retry of a JSON that does not parse; doubled each time, capped at UNPARSABLE_RETRY_MAX
UNPARSABLE_RETRY_MIN = 0.05
UNPARSABLE_RETRY_MAX = 1.0


class JobSyncer:
    """Writes jobs through the scheduler and says what happened to each, once.

    A job JSON that does not parse is taken for one a legacy writer is still writing:
    it is retried with backoff (through ``retry``) and only becomes an ``invalid_json``
    problem once it has stayed broken for ``unparsable_grace`` seconds. Nothing is
    written from it meanwhile, since the backfill's path never writes a JSON that does
    not parse.
    """

    def __init__(
        self,
        data_dir: Path,
        write: WriteOptions,
        *,
        scan_processes: int = 1,
        unparsable_grace: float,
        stats: SyncStats,
        retry: Callable[[str, float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.write = write
        self.scan_processes = scan_processes
        self.unparsable_grace = unparsable_grace
        self.stats = stats
        self.retry = retry
        self.clock = clock
        #: job -> (its first failure, the backoff of its retries)
        self._unparsed: dict[str, tuple[float, Backoff]] = {}
        self._reported: set[int] = set()
        self._problems: list[Problem] = []
        self._named_in_other_case: set[str] = set()  # job ids; see json_named_in_other_case
        #: how jobs are written (job_input_files there? the owner's id?), read again at each
        #: rescan rather than for every job synced
        self._settings: WriteSettings | None = None

    def sync(
        self, conn: psycopg.Connection[Any], run_id: int | None, jobs: list[tuple[str, float]]
    ) -> None:
        """Sync these (job id, first event) now; raises psycopg.Error if the connection is lost."""
        first_seen = dict(jobs)
        sources: list[ScanItem] = []
        for job_id in first_seen:
            any_case = job_id in self._named_in_other_case
            try:
                items = tree.scan_job(self.data_dir, job_id, any_case=any_case)
            except Exception:  # a bug met on one job must not stop the others
                log.exception("%s: unexpected error; the next rescan tries again", job_id)
                self.stats.error()
                continue
            if not items:
                log.debug("%s: no job JSON on disk; nothing to sync", job_id)
                self._unparsed.pop(job_id, None)
            sources += items
        if sources:
            self._write(
                conn, run_id, sources, _SyncObserver(self, first_seen, quiet_unchanged=False)
            )

    def rescan(
        self,
        conn: psycopg.Connection[Any],
        run_id: int | None,
        stop: threading.Event,
        connect: Connect | None = None,
    ) -> Summary:
        """Every job under DATA_DIR, as the backfill does it: unchanged jobs cost a stat.

        With ``write.connections`` above one and ``connect``, the batches go to that many
        writer connections, opened for the rescan. A job's milliseconds count from the
        start of the rescan. A refusal of the database on a live connection is logged,
        and the next rescan tries again.
        """
        run = _SyncObserver(self, {}, quiet_unchanged=True)
        self._settings = self.write.settings(conn)
        items = self._noting_names(tree.scan(self.data_dir, workers=self.scan_processes))
        reading = self.write.reading(self.data_dir, self._settings)
        step = applying(self.write, run_id, self.data_dir)
        try:
            run.summary.interrupted = run_batches(
                conn, self.write, reading, items, run, step, stop=stop, connect=connect
            )
        except BatchStopped:
            raise  # a fault of the server, not of the batch: the daemon waits it out
        except psycopg.Error as exc:
            if conn.closed or conn.broken or is_server_fault(exc.sqlstate):
                raise
            log.error("rescan: the database refused a batch (%s); the next rescan retries", exc)
            self.stats.error()
        return run.summary

    def json_named_in_other_case(self, job_id: str) -> None:
        """A JSON of this job is not named ``<id>.json``: look for all its names from now on.

        Such names are rare; every other job is looked up with one stat, not a listing.
        May be called from any thread.
        """
        self._named_in_other_case.add(job_id)

    def _noting_names(self, items: Iterable[ScanItem]) -> Iterator[ScanItem]:
        """The scan, passed through, noting the jobs with a JSON named in another case."""
        for item in items:
            path = item.json_path if isinstance(item, JobSource) else item.path
            if (
                item.job_id is not None
                and path is not None
                and path.startswith(f"{JOBS}/")
                and path != f"{JOBS}/{item.job_id}.json"
            ):
                self._named_in_other_case.add(item.job_id)
            yield item

    def _write(
        self,
        conn: psycopg.Connection[Any],
        run_id: int | None,
        items: list[ScanItem],
        run: _SyncObserver,
    ) -> None:
        """run_batches() on ``conn``, narrowing a batch the database refuses to the job refused.

        A refusal on a live connection (a statement timeout, say) is logged, and the job
        is left for the next rescan; a lost connection raises.
        """
        try:
            if self._settings is None:
                self._settings = self.write.settings(conn)
            reading = self.write.reading(self.data_dir, self._settings)
            step = applying(self.write, run_id, self.data_dir)
            run_batches(conn, self.write, reading, items, run, step)
        except BatchStopped:
            raise  # a fault of the server, not of the job: the daemon waits it out
        except psycopg.Error as exc:
            if conn.closed or conn.broken or is_server_fault(exc.sqlstate):
                raise
            if len(items) > 1:
                for item in items:
                    self._write(conn, run_id, [item], run)
                return
            log.error("%s: the database refused the job: %s", _where(items[0]), exc)
            self.stats.error()
        except Exception:
            # a bug met on one job must not stop the others, nor the daemon
            if len(items) > 1:
                for item in items:
                    self._write(conn, run_id, [item], run)
                return
            log.exception(
                "%s: unexpected error while syncing the job; the next rescan tries again",
                _where(items[0]),
            )
            self.stats.error()

    def unrecorded_problems(self) -> list[Problem]:
        """Problems not yet recorded in the bookkeeping (each reported once per daemon)."""
        return list(self._problems)

    def problems_recorded(self, n: int) -> None:
        del self._problems[:n]

    def hold_back(self, job_id: str) -> bool:
        """True (and a retry planned) while a JSON that does not parse may still be settling."""
        now = self.clock()
        if job_id not in self._unparsed:
            backoff = Backoff(UNPARSABLE_RETRY_MIN, UNPARSABLE_RETRY_MAX, self.clock)
            self._unparsed[job_id] = (now, backoff)
        first, backoff = self._unparsed[job_id]
        remaining = first + self.unparsable_grace - now
        if remaining <= 0:
            self._unparsed.pop(job_id, None)
            return False
        self.stats.held_back()
        delay = min(backoff.failed(), remaining)
        log.debug("%s: the job JSON does not parse yet; retrying in %.2f s", job_id, delay)
        self.retry(job_id, delay)
        return True

    def report(self, problem: Problem) -> None:
        if problem.severity < Severity.WARNING:
            return
        key = hash((problem.code, problem.job_id, problem.path, problem.message))
        if key in self._reported:
            return
        self._reported.add(key)
        self._problems.append(problem)
        if problem.severity is Severity.ERROR:
            self.stats.error()
        level = logging.ERROR if problem.severity is Severity.ERROR else logging.WARNING
        where = problem.job_id or problem.path or "-"
        log.log(
            level,
            "%s %s: %s",
            where,
            problem.code,
            problem.message,
            extra={"job_id": problem.job_id, "code": problem.code, "path": problem.path},
        )

    def done(
        self, result: JobResult, started: float, first_seen: float | None, quiet: bool
    ) -> None:
        self._unparsed.pop(result.job_id, None)
        now = self.clock()
        ms = round((now - started) * 1000)
        lag_ms = None if first_seen is None else round((now - first_seen) * 1000)
        self.stats.job_synced(result.job_id, result.action, lag_ms, quiet=quiet)
        if result.action == "unchanged" and quiet:
            return
        log.info(
            "%s %s %d ms",
            result.job_id,
            result.action,
            ms,
            extra={"job_id": result.job_id, "action": result.action, "ms": ms, "lag_ms": lag_ms},
        )


def _where(item: ScanItem) -> str:
    if isinstance(item, JobSource):
        return item.job_id
    return item.job_id or item.path or "-"


class _SyncObserver:
    """The observer of one sync or rescan: its summary, and each problem and job to the syncer."""

    def __init__(
        self, syncer: JobSyncer, first_seen: dict[str, float], *, quiet_unchanged: bool
    ) -> None:
        self.summary = Summary()
        self.syncer = syncer
        self.first_seen = first_seen
        self.quiet_unchanged = quiet_unchanged
        self.started = syncer.clock()
        self.held: set[str] = set()

    def on_problem(self, problem: Problem) -> None:
        if (
            problem.code == "invalid_json"
            and problem.job_id
            and self.syncer.hold_back(problem.job_id)
        ):
            self.held.add(problem.job_id)
            return
        self.summary.on_problem(problem)
        self.syncer.report(problem)

    def on_job(self, result: JobResult) -> None:
        if result.job_id in self.held:
            return  # not a skip: it is retried
        self.summary.on_job(result)
        self.syncer.done(
            result, self.started, self.first_seen.get(result.job_id), self.quiet_unchanged
        )
