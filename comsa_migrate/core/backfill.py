"""Backfill: scan the legacy tree and upsert every job, one transaction per job."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from comsa_migrate.core import store, tree
from comsa_migrate.core.layout import JobSource, ScanItem, read_job_json
from comsa_migrate.core.normalise import parse_job
from comsa_migrate.core.uploads import DEFAULT_MAX_INPUT_BYTES, input_contents
from comsa_migrate.core.writers import Connect, migrate_in_parallel
from comsa_migrate.db.migrations import MigrationResult, migrate
from comsa_migrate.errors import RunStopped, first_line
from comsa_migrate.problems import Problem, Severity

__all__ = [
    "ACTIONS",
    "BackfillOptions",
    "JobResult",
    "Summary",
    "backfill",
    "migrate_jobs",
    "prepared_batches",
    "record_outcome",
]

log = logging.getLogger(__name__)

#: what can happen to a job, in the order summaries list them
ACTIONS = ("insert", "update", "unchanged", "skip", "conflict", "metadata_only")
EXAMPLES_PER_CODE = 10
DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_SIZE = 200
#: the dashboard runs in backend/ and writes every path as data/...
DEFAULT_PATH_PREFIX = "data/"
#: writer connections of a backfill (--jobs)
DEFAULT_WRITERS = 2


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    data_dir: Path
    force: bool = False
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    batch_size: int = DEFAULT_BATCH_SIZE
    #: DATA_DIR as the dashboard's working folder (backend/) sees it; "" for DATA_DIR itself
    path_prefix: str = DEFAULT_PATH_PREFIX
    input_content: bool = True  # copy uploads into job_input_files, where it exists
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    owner: str | None = None  # e-mail of the dashboard user given the jobs nobody owns
    #: writer connections (--jobs); more than one needs a way to open them (``connect``)
    writers: int = DEFAULT_WRITERS

    def settings(self, conn: psycopg.Connection[Any] | None) -> store.WriteSettings:
        """How this run writes to ``conn``; ConfigurationError for an --owner not found."""
        return store.write_settings(
            conn,
            self.path_prefix,
            input_content=self.input_content,
            max_input_bytes=self.max_input_bytes,
            owner=self.owner,
        )


@dataclass(frozen=True, slots=True)
class JobResult:
    """One job's fate, as the daemon logs it."""

    job_id: str
    action: str
    rows: dict[str, int]


@dataclass
class Summary:
    """Totals of one run; error-level problems are kept whole, others as counts and examples."""

    actions: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    problem_counts: Counter[str] = field(default_factory=Counter)
    errors: list[Problem] = field(default_factory=list)
    examples: dict[str, list[Problem]] = field(default_factory=dict)
    migrations: MigrationResult | None = None
    elapsed: float = 0.0
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped part-way, if it did
    inputs_stored: bool = False  # uploads are copied into job_input_files
    owner: str | None = None  # --owner, the e-mail of the owner given to jobs without one

    @property
    def jobs(self) -> int:
        return sum(self.actions[a] for a in ACTIONS if a != "metadata_only")

    @property
    def ok(self) -> bool:
        # an error of no job: a folder of the tree that could not be listed
        unlisted = any(p.job_id is None for p in self.errors)
        return self.actions["skip"] == 0 and self.actions["conflict"] == 0 and not unlisted

    def add(self, problem: Problem) -> None:
        self.problem_counts[problem.code] += 1
        if problem.severity is Severity.ERROR:
            self.errors.append(problem)
        else:
            examples = self.examples.setdefault(problem.code, [])
            if len(examples) < EXAMPLES_PER_CODE:
                examples.append(problem)

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables whose rows this run counts: job_input_files when uploads go there."""
        return store.TABLES if self.inputs_stored else store.TABLES[:3]

    def totals(self) -> dict[str, Any]:
        return {
            "actions": dict(self.actions),
            "rows": dict(self.rows),
            "problems": dict(self.problem_counts),
            "elapsed_s": round(self.elapsed, 3),
        }


def backfill(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    *,
    stop: threading.Event | None = None,
    on_job: Callable[[JobResult], None] | None = None,
    connect: Connect | None = None,
) -> Summary:
    """Migrate every job under ``options.data_dir``; apply pending migrations first.

    The data folder is checked before the database is touched. Unchanged jobs are
    recognised from stat alone. ``stop`` ends the run between batches (each job already
    written stays written) and marks the summary interrupted. A database lost part-way
    raises RunStopped with the summary of what was written. The run is recorded as ok,
    skipped, interrupted or failed: never ok when it did not finish. With
    ``options.writers`` above one, ``connect`` opens the writers' connections.
    """
    started = time.monotonic()
    tree.check_data_dir(options.data_dir)
    settings = options.settings(conn)  # an unknown --owner stops here, before any write
    summary = Summary(migrations=migrate(conn))
    summary.inputs_stored, summary.owner = settings.store_inputs, options.owner
    store.prepare_session(conn)
    run_id = store.start_run(conn, "backfill", str(options.data_dir))
    outcome = "failed"
    try:
        if settings.owner_id is not None:
            summary.rows["owned"] += store.give_owner(conn, settings.owner_id)
        items = tree.scan(options.data_dir)
        migrate_jobs(
            conn, options, items, summary, run_id, stop, on_job, settings=settings, connect=connect
        )
        outcome = "interrupted" if summary.interrupted else ("ok" if summary.ok else "skipped")
    except psycopg.Error as exc:  # each job's own refusals are caught server-side: the run ends
        if isinstance(exc, psycopg.errors.InsufficientPrivilege) and not any(summary.rows.values()):
            raise  # nothing written yet: the missing right is the whole story
        # a writer's connection may be the one lost, while this one has not noticed yet
        lost = conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError)
        what = "the database connection was lost" if lost else "the database stopped the run"
        summary.stopped = f"{what}: {first_line(exc)}"
        raise RunStopped(summary.stopped, summary) from None
    finally:
        summary.elapsed = time.monotonic() - started
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                store.finish_run(conn, run_id, outcome, summary.totals())
    return summary


def migrate_jobs(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[ScanItem],
    summary: Summary,
    run_id: int | None,
    stop: threading.Event | None = None,
    on_job: Callable[[JobResult], None] | None = None,
    *,
    settings: store.WriteSettings | None = None,
    connect: Connect | None = None,
) -> None:
    """The one path every job takes to the database: batch, skip unchanged, parse, write.

    While a writer thread waits for the server to write one batch, the next batch is
    read and normalised and the one after it scanned. What that work decides is held
    back and told to ``summary`` and ``on_job`` (on this thread) after the outcomes of
    the batch before, in the order of a plain loop; as in a plain loop, every batch
    prepared is written, and the connection serves one thread at a time.
    """
    settings = settings or options.settings(conn)
    if options.writers > 1 and connect is not None:
        args = (options, settings, items, summary, run_id, stop, on_job)
        migrate_in_parallel(conn, connect, options.writers, *args)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="comsa-migrate-write") as pool:
        _Migration(conn, options, settings, items, summary, run_id, on_job, pool).run(stop)


def prepared_batches(
    conn: psycopg.Connection[Any] | None,
    options: BackfillOptions,
    items: Iterable[ScanItem],
    summary: Summary,
    stop: threading.Event | None = None,
    on_job: Callable[[JobResult], None] | None = None,
) -> Iterator[tuple[list[JobSource], list[bytes]]]:
    """Batches of jobs that need the database's decision, as (sources, payloads).

    Everything decided without the database is recorded in ``summary`` on the way:
    tree problems, jobs unchanged by stat, unreadable or invalid JSON, metadata sidecars.
    Reads nothing but the fingerprints, so it is safe in a read-only transaction; with
    ``conn`` None there are no fingerprints to trust and every job is read.
    """
    sink = _Direct(summary, on_job)
    settings = options.settings(conn)
    summary.inputs_stored = settings.store_inputs
    for batch in _batches(items, options.batch_size, sink):
        if stop is not None and stop.is_set():
            summary.interrupted = True
            return
        known = {} if conn is None else _known_fingerprints(conn, options, batch)
        prepared = _prepare(options, settings, batch, known, sink)
        if prepared is not None:
            yield prepared.sources, prepared.payloads


class _Sink(Protocol):
    """Where preparing a batch tells its problems and the jobs it settles."""

    def add(self, problem: Problem) -> None: ...

    def record(self, result: JobResult) -> None: ...


class _Direct:
    """Straight into the summary."""

    def __init__(self, summary: Summary, on_job: Callable[[JobResult], None] | None) -> None:
        self._summary, self._on_job = summary, on_job

    def add(self, problem: Problem) -> None:
        self._summary.add(problem)

    def record(self, result: JobResult) -> None:
        _record(self._summary, self._on_job, result)


class _Held:
    """Held back, to be told to the summary later in the same order."""

    def __init__(self) -> None:
        self._events: list[Problem | JobResult] = []

    def add(self, problem: Problem) -> None:
        self._events.append(problem)

    def record(self, result: JobResult) -> None:
        self._events.append(result)

    def take(self) -> _Held:
        """A new holder with everything held so far; this one starts empty."""
        taken = _Held()
        taken._events, self._events = self._events, []
        return taken

    def replay(self, summary: Summary, on_job: Callable[[JobResult], None] | None) -> None:
        events, self._events = self._events, []
        for event in events:
            if isinstance(event, Problem):
                summary.add(event)
            else:
                _record(summary, on_job, event)


@dataclass(frozen=True, slots=True)
class _Batch:
    """Jobs read and normalised, waiting for the database's decision."""

    sources: list[JobSource]
    payloads: list[bytes]


def _known_fingerprints(
    conn: psycopg.Connection[Any], options: BackfillOptions, batch: list[JobSource]
) -> dict[str, str]:
    if options.force:
        return {}
    return store.known_fingerprints(conn, [s.job_id for s in batch])


def _prepare(
    options: BackfillOptions,
    settings: store.WriteSettings,
    batch: list[JobSource],
    known: dict[str, str],
    sink: _Sink,
) -> _Batch | None:
    """Settle the jobs unchanged by stat; read and normalise the others."""
    sources: list[JobSource] = []
    payloads: list[bytes] = []
    for source in batch:
        if not source.racy and known.get(source.job_id) == settings.fingerprint(source.fingerprint):
            sink.record(JobResult(source.job_id, "unchanged", {}))
            continue
        payload = _read_and_normalise(options, settings, source, sink)
        if payload is not None:
            sources.append(source)
            payloads.append(payload)
    return _Batch(sources, payloads) if payloads else None


class _Migration:
    """migrate_jobs() in motion: one batch written on the writer thread, the next prepared here."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        options: BackfillOptions,
        settings: store.WriteSettings,
        items: Iterable[ScanItem],
        summary: Summary,
        run_id: int | None,
        on_job: Callable[[JobResult], None] | None,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.conn, self.options, self.settings, self.summary = conn, options, settings, summary
        self.run_id, self.on_job, self.pool = run_id, on_job, pool
        self.held = _Held()  # what the scan found, told in its turn
        self.batches = _batches(items, options.batch_size, self.held)
        self.ready: _Batch | None = None  # prepared, not yet sent
        self.writing: tuple[_Batch, Future[list[store.Outcome]]] | None = None
        self.stop: threading.Event | None = None

    def run(self, stop: threading.Event | None) -> None:
        self.stop = stop
        batch = next(self.batches, None)
        while batch is not None:
            if stop is not None and stop.is_set():  # scanned, not yet prepared
                self.summary.interrupted = True
                break
            known = _known_fingerprints(self.conn, self.options, batch)
            self.send()
            scanned, prepared = self.held.take(), _Held()
            try:
                self.ready = _prepare(self.options, self.settings, batch, known, prepared)
                batch = next(self.batches, None)  # the next scan, while the server writes
            except Exception:
                if not self.settle(scanned, prepared):
                    return  # a plain loop stopped before it came this far
                self.send()  # a plain loop wrote the batch prepared before the scan failed
                self.finish()
                self.held.replay(self.summary, self.on_job)
                raise
            if not self.settle(scanned, prepared):
                return
        self.send()
        self.finish()
        self.held.replay(self.summary, self.on_job)

    def settle(self, scanned: _Held, prepared: _Held) -> bool:
        """Record the batch being written, then what scanning and preparing the next found.

        A plain loop checks ``stop`` between that scan and that preparation; if a stop
        was asked by then, the prepared batch is dropped unwritten and untold: False.
        """
        self.finish()
        scanned.replay(self.summary, self.on_job)
        if self.stop is not None and self.stop.is_set():
            self.summary.interrupted = True
            self.ready = None
            return False
        prepared.replay(self.summary, self.on_job)
        return True

    def send(self) -> None:
        """Hand the prepared batch, if any, to the writer thread."""
        if self.ready is not None:
            batch, self.ready = self.ready, None
            future = self.pool.submit(_apply, self.conn, self.options, batch, self.run_id)
            self.writing = (batch, future)

    def finish(self) -> None:
        """Wait for the batch being written, if any, and record its outcomes."""
        if self.writing is not None:
            (batch, future), self.writing = self.writing, None
            _record_outcomes(self.summary, self.on_job, batch, future.result())


def _apply(
    conn: psycopg.Connection[Any], options: BackfillOptions, batch: _Batch, run_id: int | None
) -> list[store.Outcome]:
    return store.apply_batch(conn, batch.payloads, force=options.force, run_id=run_id)


def _record_outcomes(
    summary: Summary,
    on_job: Callable[[JobResult], None] | None,
    batch: _Batch,
    outcomes: list[store.Outcome],
) -> None:
    for source, outcome in zip(batch.sources, outcomes, strict=True):
        record_outcome(summary, on_job, source, outcome)


def _batches(items: Iterable[ScanItem], size: int, sink: _Sink) -> Iterator[list[JobSource]]:
    batch: list[JobSource] = []
    skipped: str | None = None  # the scan gives the errors of one job in a row
    for item in items:
        if isinstance(item, Problem):
            sink.add(item)
            if item.severity is Severity.ERROR and item.job_id and item.job_id != skipped:
                sink.record(JobResult(item.job_id, "skip", {}))  # a job the scan could not read
                skipped = item.job_id
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_and_normalise(
    options: BackfillOptions, settings: store.WriteSettings, source: JobSource, sink: _Sink
) -> bytes | None:
    try:
        problems, payload, action = _normalised(options, settings, source)
    except Exception as exc:  # a bug must not cost the other jobs: this one is skipped
        log.exception("unexpected error while reading %s", source.json_path)
        problems, payload, action = [_internal_error(source, exc)], None, "skip"
    for problem in problems:
        sink.add(problem)
    if payload is None:
        sink.record(JobResult(source.job_id, action, {}))
    return payload


def _normalised(
    options: BackfillOptions, settings: store.WriteSettings, source: JobSource
) -> tuple[list[Problem], bytes | None, str]:
    """(problems, the payload or None, the job's action when there is no payload)."""
    raw = read_job_json(options.data_dir, source, options.max_json_bytes)
    if isinstance(raw, Problem):
        return [raw], None, "skip"
    parsed = parse_job(raw, source, options.data_dir)
    problems = list(parsed.problems)
    if parsed.record is None:
        return problems, None, "metadata_only" if parsed.metadata_only else "skip"
    inputs = None
    if settings.store_inputs:
        inputs, upload_problems = input_contents(options.data_dir, source, settings.max_input_bytes)
        problems += upload_problems
        if any(p.severity is Severity.ERROR for p in upload_problems):
            return problems, None, "skip"
    return problems, store.job_payload(parsed.record, settings, inputs), ""


def _internal_error(source: JobSource, exc: Exception) -> Problem:
    return Problem(
        "internal_error",
        f"{type(exc).__name__}: {exc} (a bug in comsa-migrate: please report it)",
        source.job_id,
        source.json_path,
    )


def record_outcome(
    summary: Summary,
    on_job: Callable[[JobResult], None] | None,
    source: JobSource,
    outcome: store.Outcome,
) -> None:
    """Count what the database did (or would do) with one job; conflicts and errors are problems."""
    action = outcome.action
    if action == "conflict":
        summary.add(
            Problem(
                "conflict",
                "the database rows were changed since comsa-migrate wrote them "
                "(or it never wrote them); left alone, --force overwrites",
                source.job_id,
                source.json_path,
            )
        )
    elif action == "error":
        summary.add(Problem("db_error", outcome.message or "", source.job_id, source.json_path))
        action = "skip"
    summary.rows.update(outcome.rows)
    _record(summary, on_job, JobResult(source.job_id, action, outcome.rows))


def _record(
    summary: Summary, on_job: Callable[[JobResult], None] | None, result: JobResult
) -> None:
    summary.actions[result.action] += 1
    if on_job is not None:
        on_job(result)
