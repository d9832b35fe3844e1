"""--jobs N: several writer connections write what one writes, and tell it in the same order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.core.backfill import BackfillOptions, backfill
from comsa_migrate.core.summary import JobResult
from comsa_migrate.problems import Problem

from .conftest import copy_fixture
from .helpers import stored_contents, table_counts


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

    options = BackfillOptions(data, batch_size=7, writers=writers)
    with psycopg.connect(dsn, autocommit=True) as conn:
        summary = backfill(
            conn,
            options,
            observers=[Told()],
            connect=lambda: psycopg.connect(dsn, autocommit=True),
        )
    return summary, told


@pytest.mark.parametrize("writers", [2, 4])
def test_n_writers_write_row_for_row_what_one_writes_and_tell_it_in_the_same_order(
    quirky_tree: Path, dsn: str, request: Any, writers: int
) -> None:
    one_dsn = request.getfixturevalue("empty_dsn")
    alone, told_alone = run(one_dsn, quirky_tree, 1)
    many, told_many = run(dsn, quirky_tree, writers)

    with (
        psycopg.connect(one_dsn, autocommit=True) as reference,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        assert stored_contents(conn) == stored_contents(reference)
        assert table_counts(conn) == table_counts(reference)
    assert told_many == told_alone
    assert many.errors == alone.errors
    assert many.examples == alone.examples
    assert many.actions == alone.actions
    assert many.rows == alone.rows
    assert alone.actions["skip"] > 0 and alone.actions["insert"] > 600


def test_a_sigkill_mid_run_with_four_writers_converges_on_rerun(
    quirky_tree: Path, dsn: str, request: Any
) -> None:
    clean_dsn = request.getfixturevalue("empty_dsn")
    command = [sys.executable, "-m", "comsa_migrate", "backfill", str(quirky_tree), "-q"]
    process = subprocess.Popen(
        [*command, "--dsn", dsn, "--jobs", "4", "--batch-size", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while table_counts(conn)["jobs"] < 40:
            assert time.monotonic() < deadline, "no jobs written after 60 s"
            time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    with psycopg.connect(dsn, autocommit=True) as conn:
        # every job that made it in is whole, with its bookkeeping
        assert conn.execute(
            "SELECT count(*) FROM jobs j LEFT JOIN comsa_migrate.job_state s ON s.job_id = j.id"
            " WHERE s.job_id IS NULL"
        ).fetchone() == (0,)
    for target in (dsn, clean_dsn):
        finished = subprocess.run([*command, "--dsn", target, "--jobs", "4"], capture_output=True)
        assert finished.returncode == 1, finished.stderr  # the quirks' errors
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(clean_dsn, autocommit=True) as clean,
    ):
        assert stored_contents(conn) == stored_contents(clean)
