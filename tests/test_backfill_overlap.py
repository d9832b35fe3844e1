"""The scheduler prepares the next batch while the server writes one: pinned against a plain
loop (prepare a batch, write it, record it), which must tell and write exactly the same."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.backfill import BackfillOptions
from comsa_migrate.core import tree
from comsa_migrate.core.layout import ScanItem
from comsa_migrate.core.plan import batches, prepare, tell_outcome, unchanged_by_stat
from comsa_migrate.db.fingerprints import recorded_fingerprints
from comsa_migrate.db.writes import apply_batch
from comsa_migrate.errors import DataDirError
from comsa_migrate.observer import JobResult, Observer
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.pipeline.scheduler import applying, run_batches
from comsa_migrate.pipeline.summary import Summary
from comsa_migrate.problems import Problem

from .conftest import copy_fixture
from .helpers import age_tree, table_counts

Migrate = Callable[..., bool]


def plain_loop(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[ScanItem],
    observer: Observer,
    run_id: int | None,
    stop: threading.Event | None = None,
) -> bool:
    """The reference: one batch at a time, nothing overlapped."""
    write = options.write
    reading = write.reading(options.data_dir, write.settings(conn))
    for batch in batches(items, write.batch_size, observer):
        if stop is not None and stop.is_set():
            return True
        recorded = recorded_fingerprints(conn, [s.job_id for s in batch], write.limits)()
        prepared = prepare(reading, batch, unchanged_by_stat(reading, batch, recorded), observer)
        if prepared is None:
            continue
        outcomes = apply_batch(conn, prepared.payloads, force=write.force, run_id=run_id)
        for source, outcome in zip(prepared.sources, outcomes, strict=True):
            tell_outcome(observer, source, outcome)
    return False


def scheduled(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[ScanItem],
    observer: Observer,
    run_id: int | None,
    stop: threading.Event | None = None,
) -> bool:
    """The scheduler, with one writer on the caller's connection."""
    write = options.write
    reading = write.reading(options.data_dir, write.settings(conn))
    step = applying(write, run_id, options.data_dir)
    return run_batches(conn, write, reading, items, observer, step, stop=stop)


@dataclass
class Heard:
    """Everything a run told (problems and jobs, in one sequence), and the rows it left."""

    told: list[tuple[Any, ...]] = field(default_factory=list)
    results: list[JobResult] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    rows: dict[str, int] = field(default_factory=dict)


class _Listening:
    """Hears what a run tells, into a summary too, and asks a stop after some jobs."""

    def __init__(self, heard: Heard, stop: threading.Event, stop_after: int | None) -> None:
        self.heard, self.stop, self.stop_after = heard, stop, stop_after
        self.summary = Summary()

    def on_problem(self, problem: Problem) -> None:
        self.heard.told.append(("problem", problem.code, problem.job_id, problem.path))
        self.summary.on_problem(problem)

    def on_job(self, result: JobResult) -> None:
        self.heard.results.append(result)
        self.heard.told.append(("job", result.job_id, result.action, result.rows))
        self.summary.on_job(result)
        if self.stop_after is not None and len(self.heard.results) >= self.stop_after:
            self.stop.set()


@pytest.fixture
def mixed_tree(tmp_path: Path) -> Path:
    """The quirks tree (bad JSON, sidecars, stray files) with 12 well-formed jobs added."""
    data_dir = copy_fixture("quirks", tmp_path)
    generate(data_dir, TreeShape(jobs=12, seed=5))
    age_tree(data_dir)
    return data_dir


def _run(
    migrate: Migrate,
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    items: Iterable[ScanItem],
    stop_after: int | None = None,
) -> Heard:
    heard = Heard()
    stop = threading.Event()
    listening = _Listening(heard, stop, stop_after)
    try:
        heard.interrupted = migrate(conn, options, items, listening, None, stop)
    finally:
        heard.actions = dict(listening.summary.actions)
        heard.rows = table_counts(conn)
    return heard


def _forget(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE jobs, job_logs, job_files, comsa_migrate.job_state")


def test_overlapped_run_tells_and_writes_what_a_plain_loop_does_cold_and_on_rerun(
    conn: psycopg.Connection[Any], mixed_tree: Path
) -> None:
    options = BackfillOptions(mixed_tree, WriteOptions(batch_size=3))
    heard: dict[Migrate, list[Heard]] = {}
    for migrate in (plain_loop, scheduled):
        _forget(conn)
        cold = _run(migrate, conn, options, tree.scan(mixed_tree))
        conn.execute("DELETE FROM jobs WHERE id = (SELECT id FROM jobs ORDER BY id LIMIT 1)")
        rerun = _run(migrate, conn, options, tree.scan(mixed_tree))
        heard[migrate] = [cold, rerun]

    assert heard[scheduled] == heard[plain_loop]
    cold, rerun = heard[plain_loop]
    assert cold.actions == {"insert": 16, "skip": 3, "metadata_only": 1}
    assert rerun.actions == {"insert": 1, "unchanged": 15, "skip": 3, "metadata_only": 1}
    assert len(cold.told) > len(cold.results) == 20


@pytest.mark.parametrize("stop_after", [1, 3, 4, 7, 12])
def test_a_stop_asked_while_jobs_are_told_ends_the_run_where_a_plain_loop_ends_it(
    conn: psycopg.Connection[Any], mixed_tree: Path, stop_after: int
) -> None:
    options = BackfillOptions(mixed_tree, WriteOptions(batch_size=3))
    heard = {}
    for migrate in (plain_loop, scheduled):
        _forget(conn)
        heard[migrate] = _run(migrate, conn, options, tree.scan(mixed_tree), stop_after)

    assert heard[scheduled] == heard[plain_loop]
    assert heard[plain_loop].interrupted


def _failing_after(items: Iterable[ScanItem], n: int) -> Iterator[ScanItem]:
    for i, item in enumerate(items):
        if i == n:
            raise DataDirError("the tree went away")
        yield item


@pytest.mark.parametrize("fail_at", [0, 4, 9, 13])
def test_a_scan_failing_midway_leaves_written_and_told_what_a_plain_loop_did(
    conn: psycopg.Connection[Any], mixed_tree: Path, fail_at: int
) -> None:
    options = BackfillOptions(mixed_tree, WriteOptions(batch_size=3))
    heard = {}
    for migrate in (plain_loop, scheduled):
        _forget(conn)
        with pytest.raises(DataDirError):
            items = _failing_after(tree.scan(mixed_tree), fail_at)
            _run(migrate, conn, options, items)
        heard[migrate] = Heard(rows=table_counts(conn))

    assert heard[scheduled].rows == heard[plain_loop].rows
