"""--jobs N: several writer connections write what one writes, and tell it in the same order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.observer import JobResult
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.problems import Problem

from .conftest import Databases, copy_fixture, fresh_database
from .helpers import held_jobs, in_reading_order, stored_contents, table_counts


@pytest.fixture(scope="module")
def quirky_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every legacy quirk of fixtures/quirks beside 600 sample-shaped jobs; read only."""
    data = copy_fixture("quirks", tmp_path_factory.mktemp("writers"))
    return generate(data, TreeShape(600, seed=7))


def run(dsn: str, data: Path, writers: int) -> tuple[Any, list[tuple[str, str]]]:
    told: list[tuple[str, ...]] = []

    class Told:
        """Every problem and every job, in the order told."""

        def on_problem(self, problem: Problem) -> None:
            told.append((problem.code, problem.job_id or "", problem.path or ""))

        def on_job(self, result: JobResult) -> None:
            told.append((result.job_id, result.action))

    options = BackfillOptions(data, WriteOptions(batch_size=7, connections=writers))
    with psycopg.connect(dsn, autocommit=True) as conn:
        summary = backfill(
            conn,
            options,
            observers=[Told()],
            connect=lambda: psycopg.connect(dsn, autocommit=True),
        )
    return summary, told


@pytest.fixture(scope="module")
def one_writer(quirky_tree: Path, databases: Databases) -> Iterator[OneWriter]:
    """What one writer writes and tells from the quirky tree; read only."""
    with fresh_database(databases, "template0") as dsn:
        summary, told = run(dsn, quirky_tree, 1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield OneWriter(summary, told, stored_contents(conn), table_counts(conn))


@dataclass(frozen=True)
class OneWriter:
    summary: Any
    told: list[tuple[str, str]]
    contents: dict[str, Any]
    counts: dict[str, int]


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 4])
def test_n_writers_write_row_for_row_what_one_writes_and_tell_it_in_the_same_order(
    quirky_tree: Path, dsn: str, one_writer: OneWriter, writers: int
) -> None:
    alone = one_writer.summary
    many, told_many = run(dsn, quirky_tree, writers)

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert stored_contents(conn) == one_writer.contents
        assert table_counts(conn) == one_writer.counts
    assert told_many == one_writer.told
    assert many.errors == alone.errors
    assert many.examples == alone.examples
    assert many.actions == alone.actions
    assert many.rows == alone.rows
    assert alone.actions["skip"] > 0 and alone.actions["insert"] > 600


@pytest.mark.slow
def test_a_sigkill_mid_run_with_four_writers_converges_on_rerun(
    quirky_tree: Path, dsn: str, one_writer: OneWriter
) -> None:
    command = [sys.executable, "-m", "comsa_migrate", "backfill", str(quirky_tree), "-q"]
    with held_jobs(dsn, in_reading_order(quirky_tree)[40:]) as held:
        process = subprocess.Popen(
            [*command, "--dsn", dsn, "--jobs", "4", "--batch-size", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        held.wait_for_a_writer()
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL

    with psycopg.connect(dsn, autocommit=True) as conn:
        # every job that made it in is whole, with its bookkeeping
        assert conn.execute(
            "SELECT count(*) FROM jobs j LEFT JOIN comsa_migrate.job_state s ON s.job_id = j.id"
            " WHERE s.job_id IS NULL"
        ).fetchone() == (0,)
        assert table_counts(conn)["jobs"] < one_writer.counts["jobs"]
    finished = subprocess.run([*command, "--dsn", dsn, "--jobs", "4"], capture_output=True)
    assert finished.returncode == 1, finished.stderr  # the quirks' errors
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert stored_contents(conn) == one_writer.contents


@pytest.mark.slow
def test_without_pipeline_mode_two_writers_write_and_tell_the_same_and_rerun_unchanged(
    quirky_tree: Path, dsn: str, one_writer: OneWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A libpq older than 14 has no pipeline mode: each batch's fingerprints are then read
    before the scan goes on. There is no such libpq here; its one answer is stood in for."""
    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))

    many, told_many = run(dsn, quirky_tree, 2)
    rerun, _ = run(dsn, quirky_tree, 2)

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert stored_contents(conn) == one_writer.contents
    assert told_many == one_writer.told
    assert rerun.actions["unchanged"] == many.actions["insert"] + many.actions["update"]
    assert rerun.actions["insert"] == rerun.actions["update"] == 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_rerun_with_two_writers_takes_a_job_whose_stat_is_the_same_as_unchanged(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """Proof that the fingerprints decided: a JSON rewritten in place to the same size and
    mtime is not read again (as git's index, the tool trusts what stat says)."""
    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: pipelined))
    data = generate(tmp_path / "data", TreeShape(30, seed=3))
    first, _ = run(dsn, data, 2)
    json_path = next(
        p for p in sorted((data / "jobs").iterdir()) if b'"completed"' in p.read_bytes()
    )
    before = json_path.stat()
    raw = json_path.read_bytes()
    json_path.write_bytes(raw.replace(b'"completed"', b'"COMPLETED"', 1))
    os.utime(json_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert json_path.stat().st_size == before.st_size and json_path.read_bytes() != raw

    rerun, _ = run(dsn, data, 2)

    assert first.actions["insert"] == 30
    assert rerun.actions["unchanged"] == 30


def test_the_connection_given_is_left_idle_and_out_of_pipeline_mode(
    tmp_path: Path, dsn: str
) -> None:
    data = generate(tmp_path / "data", TreeShape(12, seed=5))
    options = BackfillOptions(data, WriteOptions(batch_size=5, connections=2))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(2):  # a cold run, then a rerun that only reads fingerprints
            backfill(conn, options, connect=lambda: psycopg.connect(dsn, autocommit=True))

            assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (12,)
