"""The one path every job takes to the database: batch, skip unchanged, read, normalise, write.

The backfill, the report (up to the write) and the sync daemon all go through here, and
tell what they find to an Observer in the order a plain loop over the jobs would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psycopg

from comsa_migrate.core import store
from comsa_migrate.core.layout import JobSource, ScanItem, read_job_json
from comsa_migrate.core.normalise import parse_job
from comsa_migrate.core.summary import JobResult, Observer
from comsa_migrate.core.uploads import InlineBudget, StreamedUpload, input_contents
from comsa_migrate.file_store.keeping import keep_contents
from comsa_migrate.problems import Problem, Severity

if TYPE_CHECKING:
    from comsa_migrate.core.backfill import BackfillOptions
    from comsa_migrate.core.writers import Connect

__all__ = ["PreparedBatches", "migrate_jobs", "tell_outcome", "tell_written"]

log = logging.getLogger(__name__)


def migrate_jobs(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[ScanItem],
    observer: Observer,
    run_id: int | None,
    stop: threading.Event | None = None,
    *,
    settings: store.WriteSettings | None = None,
    connect: Connect | None = None,
) -> bool:
    """Write the jobs of ``items``; True when ``stop`` ended it before the last batch.

    While a writer thread waits for the server to write one batch, the next batch is
    read and normalised and the one after it scanned. What that work decides is held
    back and told to ``observer`` (on this thread) after the outcomes of the batch
    before, in the order of a plain loop; as in a plain loop, every batch prepared is
    written, and the connection serves one thread at a time. With ``options.writers``
    above one and ``connect``, the batches go to that many connections of their own.
    """
    settings = settings or options.settings(conn)
    if options.writers > 1 and connect is not None:
        from comsa_migrate.core.writers import migrate_in_parallel

        args = (options, settings, items, observer, run_id, stop)
        return migrate_in_parallel(conn, connect, options.writers, *args)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="comsa-migrate-write") as pool:
        return _Migration(conn, options, settings, items, observer, run_id, pool).run(stop)


class PreparedBatches:
    """Batches of jobs that need the database's decision, as (sources, payloads).

    Everything decided without the database is told to ``observer`` on the way: tree
    problems, jobs unchanged by stat, unreadable or invalid JSON, metadata sidecars.
    Reads nothing but the fingerprints, so it is safe in a read-only transaction; with
    ``conn`` None there are no fingerprints to trust and every job is read. After the
    iteration, ``interrupted`` says whether ``stop`` ended it early.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any] | None,
        options: BackfillOptions,
        items: Iterable[ScanItem],
        observer: Observer,
        stop: threading.Event | None = None,
    ) -> None:
        self.conn, self.options, self.items = conn, options, items
        self.ask = _asking(conn, options)
        self.observer, self.stop = observer, stop
        self.settings = options.settings(conn)
        self.interrupted = False

    def __iter__(self) -> Iterator[tuple[list[JobSource], list[bytes]]]:
        for batch in batches(self.items, self.options.batch_size, self.observer):
            if self.stop is not None and self.stop.is_set():
                self.interrupted = True
                return
            unchanged = (
                set()
                if self.conn is None
                else unchanged_by_stat(self.ask, self.options, self.settings, batch)()
            )
            prepared = prepare(self.options, self.settings, batch, unchanged, self.observer)
            if prepared is not None:
                yield prepared.sources, cast(list[bytes], prepared.payloads)  # a report: no store


class Held:
    """An observer that holds what it is told, to tell another observer later, in order."""

    def __init__(self) -> None:
        self._events: list[Problem | JobResult] = []

    def on_problem(self, problem: Problem) -> None:
        self._events.append(problem)

    def on_job(self, result: JobResult) -> None:
        self._events.append(result)

    def take(self) -> Held:
        """A new holder with everything held so far; this one starts empty."""
        taken = Held()
        taken._events, self._events = self._events, []
        return taken

    def replay(self, observer: Observer) -> None:
        events, self._events = self._events, []
        for event in events:
            if isinstance(event, Problem):
                observer.on_problem(event)
            else:
                observer.on_job(event)


@dataclass(frozen=True, slots=True)
class Batch:
    """Jobs read and normalised, waiting for the database's decision."""

    sources: list[JobSource]
    payloads: list[bytes | None]  # None: only its files are kept (a file store's sidecar)
    uploads: list[tuple[StreamedUpload, ...]]  # each job's uploads sent apart from its payload


def unchanged_by_stat(
    ask: Callable[[Sequence[str]], store.Answer],
    options: BackfillOptions,
    settings: store.WriteSettings,
    batch: list[JobSource],
) -> Callable[[], set[int]]:
    """Ask (with ``ask``) for the fingerprints recorded for the jobs of ``batch``; the
    function returned reads them and gives the positions in ``batch`` of the jobs
    unchanged since.

    A racy fingerprint is never trusted, and --force trusts none.
    """
    if options.force:
        return set
    recorded = ask([source.job_id for source in batch])

    def unchanged() -> set[int]:
        known = recorded()
        return {
            position
            for position, source in enumerate(batch)
            if not source.racy
            and known.get(source.job_id) == settings.fingerprint(source.fingerprint)
        }

    return unchanged


def prepare(
    options: BackfillOptions,
    settings: store.WriteSettings,
    batch: list[JobSource],
    unchanged: set[int],
    observer: Observer,
) -> Batch | None:
    """Settle the jobs unchanged by stat (their positions in ``batch``); read and normalise
    the others. The uploads their payloads carry stay within one InlineBudget."""
    prepared = Batch([], [], [])
    budget = InlineBudget(settings.inline_input_bytes)
    for position, source in enumerate(batch):
        if position in unchanged:
            observer.on_job(JobResult(source.job_id, "unchanged", {}))
            continue
        written = _read_and_normalise(options, settings, source, observer, budget)
        if written is not None:
            prepared.sources.append(source)
            prepared.payloads.append(written[0])
            prepared.uploads.append(written[1])
    return prepared if prepared.payloads else None


def apply(
    conn: psycopg.Connection[Any], options: BackfillOptions, batch: Batch, run_id: int | None
) -> list[store.Outcome]:
    stored = keep_contents(conn, options, batch.sources) if options.file_store else ()
    return store.apply_batch(
        conn, batch.payloads, batch.uploads, force=options.force, run_id=run_id,
        limits=options.limits, stored=stored,
    )  # fmt: skip


def tell_written(observer: Observer, batch: Batch, writing: Future[list[store.Outcome]]) -> None:
    """Wait for a batch's write and tell its outcomes; when it stopped part-way, tell those
    of the jobs committed before the fault, then raise BatchStopped."""
    try:
        outcomes = writing.result()
    except store.BatchStopped as stopped:
        for source, outcome in zip(batch.sources, stopped.outcomes, strict=True):
            if outcome is not None:
                tell_outcome(observer, source, outcome)
        raise
    for source, outcome in zip(batch.sources, outcomes, strict=True):
        tell_outcome(observer, source, outcome)


def tell_outcome(observer: Observer, source: JobSource, outcome: store.Outcome) -> None:
    """Tell what the database did (or would do) with one job; conflicts and errors are problems."""
    action = outcome.action
    if action == "conflict":
        observer.on_problem(
            Problem(
                "conflict",
                "the database rows were changed since comsa-migrate wrote them "
                "(or it never wrote them); left alone, --force overwrites",
                source.job_id,
                source.json_path,
            )
        )
    elif action == "error":
        observer.on_problem(
            Problem("db_error", outcome.message or "", source.job_id, source.json_path)
        )
        action = "skip"
    observer.on_job(JobResult(source.job_id, action, outcome.rows))


def batches(items: Iterable[ScanItem], size: int, observer: Observer) -> Iterator[list[JobSource]]:
    """The scan's jobs in batches of ``size``; its problems are told on the way."""
    batch: list[JobSource] = []
    skipped: str | None = None  # the scan gives the errors of one job in a row
    for item in items:
        if isinstance(item, Problem):
            observer.on_problem(item)
            if item.severity is Severity.ERROR and item.job_id and item.job_id != skipped:
                observer.on_job(JobResult(item.job_id, "skip", {}))  # the scan could not read it
                skipped = item.job_id
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Migration:
    """migrate_jobs() in motion: one batch written on the writer thread, the next prepared here."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        options: BackfillOptions,
        settings: store.WriteSettings,
        items: Iterable[ScanItem],
        observer: Observer,
        run_id: int | None,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.conn, self.options, self.settings, self.observer = conn, options, settings, observer
        self.ask = _asking(conn, options)
        self.run_id, self.pool = run_id, pool
        self.held = Held()  # what the scan found, told in its turn
        self.batches = batches(items, options.batch_size, self.held)
        self.ready: Batch | None = None  # prepared, not yet sent
        self.writing: tuple[Batch, Future[list[store.Outcome]]] | None = None
        self.stop: threading.Event | None = None
        self.interrupted = False

    def run(self, stop: threading.Event | None) -> bool:
        self.stop = stop
        batch = next(self.batches, None)
        while batch is not None:
            if stop is not None and stop.is_set():  # scanned, not yet prepared
                self.interrupted = True
                break
            unchanged = unchanged_by_stat(self.ask, self.options, self.settings, batch)()
            self.send()
            scanned, prepared = self.held.take(), Held()
            try:
                self.ready = prepare(self.options, self.settings, batch, unchanged, prepared)
                batch = next(self.batches, None)  # the next scan, while the server writes
            except Exception:
                if not self.settle(scanned, prepared):
                    return self.interrupted  # a plain loop stopped before it came this far
                self.send()  # a plain loop wrote the batch prepared before the scan failed
                self.finish()
                self.held.replay(self.observer)
                raise
            if not self.settle(scanned, prepared):
                return self.interrupted
        self.send()
        self.finish()
        self.held.replay(self.observer)
        return self.interrupted

    def settle(self, scanned: Held, prepared: Held) -> bool:
        """Tell the batch being written, then what scanning and preparing the next found.

        A plain loop checks ``stop`` between that scan and that preparation; if a stop
        was asked by then, the prepared batch is dropped unwritten and untold: False.
        """
        self.finish()
        scanned.replay(self.observer)
        if self.stop is not None and self.stop.is_set():
            self.interrupted = True
            self.ready = None
            return False
        prepared.replay(self.observer)
        return True

    def send(self) -> None:
        """Hand the prepared batch, if any, to the writer thread."""
        if self.ready is not None:
            batch, self.ready = self.ready, None
            future = self.pool.submit(apply, self.conn, self.options, batch, self.run_id)
            self.writing = (batch, future)

    def finish(self) -> None:
        """Wait for the batch being written, if any, and tell its outcomes."""
        if self.writing is not None:
            (batch, future), self.writing = self.writing, None
            tell_written(self.observer, batch, future)


def _asking(
    conn: psycopg.Connection[Any] | None, options: BackfillOptions
) -> Callable[[Sequence[str]], store.Answer]:
    """Fingerprint questions on ``conn``, each answered at once."""

    def ask(job_ids: Sequence[str]) -> store.Answer:
        assert conn is not None
        return store.recorded_fingerprints(conn, job_ids, options.limits)

    return ask


#: a job's payload (None: a sidecar whose files a file store keeps), and its uploads sent apart
_Written = tuple[bytes | None, tuple[StreamedUpload, ...]]


def _read_and_normalise(
    options: BackfillOptions,
    settings: store.WriteSettings,
    source: JobSource,
    observer: Observer,
    budget: InlineBudget,
) -> _Written | None:
    try:
        problems, written, action = _normalised(options, settings, source, budget)
    except Exception as exc:  # a bug must not cost the other jobs: this one is skipped
        log.exception("unexpected error while reading %s", source.json_path)
        problems, written, action = [_internal_error(source, exc)], None, "skip"
    for problem in problems:
        observer.on_problem(problem)
    if written is None:
        observer.on_job(JobResult(source.job_id, action, {}))
    return written


def _normalised(
    options: BackfillOptions, settings: store.WriteSettings, source: JobSource, budget: InlineBudget
) -> tuple[list[Problem], _Written | None, str]:
    """(problems, what is written or None, the job's action when nothing is)."""
    raw = read_job_json(options.data_dir, source, options.max_json_bytes)
    if isinstance(raw, Problem):
        return [raw], None, "skip"
    parsed = parse_job(raw, source, options.data_dir)
    del raw  # a large JSON's bytes need not be held while its payload is made
    problems = list(parsed.problems)
    if parsed.record is None:
        kept = (None, ()) if parsed.metadata_only and settings.file_store else None
        return problems, kept, "metadata_only" if parsed.metadata_only else "skip"
    if not settings.store_inputs:
        return problems, (store.job_payload(parsed.record, settings), ()), ""
    inputs, upload_problems = input_contents(
        options.data_dir, source, settings.max_input_bytes, budget
    )
    problems += upload_problems
    if any(p.severity is Severity.ERROR for p in upload_problems):
        return problems, None, "skip"
    payload = store.job_payload(parsed.record, settings, inputs.entries)
    return problems, (payload, inputs.streamed), ""


def _internal_error(source: JobSource, exc: Exception) -> Problem:
    return Problem(
        "internal_error",
        f"{type(exc).__name__}: {exc} (a bug in comsa-migrate: please report it)",
        source.job_id,
        source.json_path,
    )
