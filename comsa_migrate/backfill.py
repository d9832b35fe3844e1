"""Backfill: scan the legacy tree and upsert every job, one transaction per job."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from . import store, tree
from .legacy import parse_job
from .problems import Problem, Severity
from .schema import MigrationResult, migrate

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


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    data_dir: Path
    force: bool = False
    max_json_bytes: int = 64 * 1024 * 1024
    batch_size: int = 200


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

    @property
    def jobs(self) -> int:
        return sum(self.actions[a] for a in ACTIONS if a != "metadata_only")

    @property
    def ok(self) -> bool:
        return self.actions["skip"] == 0 and self.actions["conflict"] == 0

    def add(self, problem: Problem) -> None:
        self.problem_counts[problem.code] += 1
        if problem.severity is Severity.ERROR:
            self.errors.append(problem)
        else:
            examples = self.examples.setdefault(problem.code, [])
            if len(examples) < EXAMPLES_PER_CODE:
                examples.append(problem)

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
) -> Summary:
    """Migrate every job under ``options.data_dir``; apply pending migrations first.

    Unchanged jobs are recognised from stat alone. ``stop`` ends the run between
    batches (each job already written stays written) and marks the summary interrupted.
    """
    started = time.monotonic()
    summary = Summary(migrations=migrate(conn))
    store.prepare_session(conn)
    run_id = store.start_run(conn, "backfill", str(options.data_dir))
    try:
        migrate_jobs(conn, options, tree.scan(options.data_dir), summary, run_id, stop, on_job)
    finally:
        summary.elapsed = time.monotonic() - started
        if not conn.closed and not conn.broken:
            outcome = "interrupted" if summary.interrupted else ("ok" if summary.ok else "skipped")
            store.finish_run(conn, run_id, outcome, summary.totals())
    return summary


def migrate_jobs(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[tree.ScanItem],
    summary: Summary,
    run_id: int | None,
    stop: threading.Event | None = None,
    on_job: Callable[[JobResult], None] | None = None,
) -> None:
    """The one path every job takes to the database: batch, skip unchanged, parse, write."""
    for sources, payloads in prepared_batches(conn, options, items, summary, stop, on_job):
        outcomes = store.apply_batch(conn, payloads, force=options.force, run_id=run_id)
        for source, outcome in zip(sources, outcomes, strict=True):
            record_outcome(summary, on_job, source, outcome)


def prepared_batches(
    conn: psycopg.Connection[Any] | None,
    options: BackfillOptions,
    items: Iterable[tree.ScanItem],
    summary: Summary,
    stop: threading.Event | None = None,
    on_job: Callable[[JobResult], None] | None = None,
) -> Iterator[tuple[list[tree.JobSource], list[bytes]]]:
    """Batches of jobs that need the database's decision, as (sources, payloads).

    Everything decided without the database is recorded in ``summary`` on the way:
    tree problems, jobs unchanged by stat, unreadable or invalid JSON, metadata sidecars.
    Reads nothing but the fingerprints, so it is safe in a read-only transaction; with
    ``conn`` None there are no fingerprints to trust and every job is read.
    """
    for batch in _batches(items, options.batch_size, summary, on_job):
        if stop is not None and stop.is_set():
            summary.interrupted = True
            return
        known = (
            {}
            if options.force or conn is None
            else store.known_fingerprints(conn, [s.job_id for s in batch])
        )
        sources: list[tree.JobSource] = []
        payloads: list[bytes] = []
        for source in batch:
            if not source.racy and known.get(source.job_id) == source.fingerprint:
                _record(summary, on_job, JobResult(source.job_id, "unchanged", {}))
                continue
            payload = _read_and_normalise(options, source, summary, on_job)
            if payload is not None:
                sources.append(source)
                payloads.append(payload)
        if payloads:
            yield sources, payloads


def _batches(
    items: Iterable[tree.ScanItem],
    size: int,
    summary: Summary,
    on_job: Callable[[JobResult], None] | None,
) -> Iterator[list[tree.JobSource]]:
    batch: list[tree.JobSource] = []
    for item in items:
        if isinstance(item, Problem):
            summary.add(item)
            if item.severity is Severity.ERROR and item.job_id:  # a job the scan could not read
                _record(summary, on_job, JobResult(item.job_id, "skip", {}))
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_and_normalise(
    options: BackfillOptions,
    source: tree.JobSource,
    summary: Summary,
    on_job: Callable[[JobResult], None] | None,
) -> bytes | None:
    raw = tree.read_job_json(options.data_dir, source, options.max_json_bytes)
    if isinstance(raw, Problem):
        summary.add(raw)
        _record(summary, on_job, JobResult(source.job_id, "skip", {}))
        return None
    parsed = parse_job(raw, source, options.data_dir)
    for problem in parsed.problems:
        summary.add(problem)
    if parsed.record is None:
        action = "metadata_only" if parsed.metadata_only else "skip"
        _record(summary, on_job, JobResult(source.job_id, action, {}))
        return None
    return store.job_payload(parsed.record)


def record_outcome(
    summary: Summary,
    on_job: Callable[[JobResult], None] | None,
    source: tree.JobSource,
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
