"""Several writers of one database: each job has one writer at a time, and whichever writes
second plans against what the first committed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.core import tree
from comsa_migrate.core.plan import Outcome, Recorder, batches, prepare
from comsa_migrate.db.writes import apply_batch
from comsa_migrate.pipeline.options import WriteOptions

from .conftest import Databases, clean_run_of
from .helpers import (
    JOB_LOCK_CLASS,
    finish,
    job_row,
    new_job_id,
    running_daemon,
    spawn_backfill,
    stored_contents,
    table_counts,
    wait_until,
    write_job_atomically,
)


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 sample-shaped jobs (logs, outputs, some uploads), read only for these tests."""
    return generate(tmp_path_factory.mktemp("writers") / "data", TreeShape(2000))


@pytest.fixture(scope="module")
def clean_run(generated_tree: Path, databases: Databases, template_db: str) -> Any:
    """What one backfill alone writes from the generated tree: (contents, row counts)."""
    with clean_run_of(databases, template_db, generated_tree) as reference:
        yield reference


def one_payload(data_dir: Path) -> bytes:
    """The payload the backfill sends for the one job under ``data_dir``."""
    write = WriteOptions()
    reading = write.reading(data_dir, write.settings(None))
    [batch] = batches(tree.scan(data_dir), 200, Recorder())
    prepared = prepare(reading, batch, set(), Recorder())
    assert prepared is not None
    [payload] = prepared.payloads
    return payload


def test_a_second_writer_of_a_job_waits_for_the_first_and_finds_it_unchanged(
    tmp_path: Path, dsn: str
) -> None:
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    payload = one_payload(data)
    outcome: list[Outcome] = []

    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        # the first writer is half-way: its job written, not yet committed
        first.execute("SELECT comsa_migrate.apply_job(%s::jsonb, false, NULL)", [payload.decode()])
        second_pid = second.info.backend_pid
        writer = threading.Thread(
            target=lambda: outcome.extend(apply_batch(second, [payload], force=False, run_id=None))
        )
        writer.start()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_until(
                lambda: watcher.execute(
                    "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
                    " AND NOT granted AND classid = %s::oid",
                    [second_pid, JOB_LOCK_CLASS],
                ).fetchone(),
                what="the second writer to wait for the job's lock",
            )
        first.commit()
        writer.join(10)
        assert not writer.is_alive()

        assert [o.action for o in outcome] == ["unchanged"]
        assert table_counts(second) == {"jobs": 1, "job_logs": 2, "job_files": 0}


@pytest.mark.slow
def test_two_backfills_started_together_write_what_one_clean_run_writes(
    generated_tree: Path, dsn: str, clean_run: Any
) -> None:
    contents, counts = clean_run
    first = spawn_backfill(generated_tree, "--dsn", dsn)
    second = spawn_backfill(generated_tree, "--dsn", dsn)
    outputs = [finish(first), finish(second)]

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents
    for output in outputs:
        assert " 0 conflicts" in output
    rerun = finish(spawn_backfill(generated_tree, "--dsn", dsn))
    assert "0 inserted, 0 updated, 2,000 unchanged" in rerun, rerun


@pytest.mark.slow
def test_a_backfill_while_the_daemon_catches_up_writes_what_one_clean_run_writes(
    generated_tree: Path, dsn: str, clean_run: Any
) -> None:
    contents, counts = clean_run
    backfill = spawn_backfill(generated_tree, "--dsn", dsn)
    with running_daemon(dsn, generated_tree, ready=False) as daemon:
        wait_until(daemon.ready.is_set, 180, "the daemon to catch up")
        output = finish(backfill)
        assert daemon.stats().get("conflict", 0) == 0

    assert " 0 conflicts" in output
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents
    rerun = finish(spawn_backfill(generated_tree, "--dsn", dsn))
    assert "0 inserted, 0 updated, 2,000 unchanged" in rerun, rerun


def test_two_daemons_on_one_data_path_with_different_names_both_run(
    tmp_path: Path, dsn: str, cli: Any
) -> None:
    data = tmp_path / "data"
    for folder in ("jobs", "uploads", "outputs"):
        (data / folder).mkdir(parents=True)
    with (
        running_daemon(dsn, data, name="pod-a") as first,
        running_daemon(dsn, data, name="pod-b") as second,
    ):
        job_id = new_job_id()
        write_job_atomically(data, job_id)
        wait_until(lambda: job_row(dsn, job_id), what="the job to be synced")
        # each daemon syncs the job: one inserts it, the other finds it unchanged
        wait_until(
            lambda: (
                sorted(
                    next(a for a in ("insert", "unchanged") if d.stats().get(a))
                    for d in (first, second)
                    if d.stats().get("insert") or d.stats().get("unchanged")
                )
                == ["insert", "unchanged"]
            ),
            what="both daemons to sync the job",
        )
        status = cli("status", "--dsn", dsn)

    assert status.exit_code == 0, status.output
    assert "name        pod-a" in status.stdout
    assert "name        pod-b" in status.stdout
    assert status.stdout.count("running, watching") == 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == {"jobs": 1, "job_logs": 2, "job_files": 0}


def test_two_daemons_with_one_name_lock_each_other_out(tmp_path: Path, dsn: str, cli: Any) -> None:
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    with running_daemon(dsn, data, name="web1"):
        started = time.monotonic()
        result = cli("sync", data, "--dsn", dsn, "--name", "web1")
        assert time.monotonic() - started < 10

    assert result.exit_code == 3
    assert "another sync daemon named web1 holds its lock" in result.stderr


@pytest.mark.slow
def test_a_daemon_catching_up_with_three_writers_writes_what_one_clean_run_writes(
    generated_tree: Path, dsn: str, clean_run: Any
) -> None:
    contents, counts = clean_run
    with running_daemon(
        dsn, generated_tree, ready=False, connections=3, scan_processes=3
    ) as daemon:
        wait_until(daemon.ready.is_set, 180, "the daemon to catch up")
        stats = daemon.stats()
        with psycopg.connect(dsn, autocommit=True) as conn:
            writers = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'comsa-migrate sync writer%%'"
            ).fetchone()

    assert stats.get("insert") == 2000
    assert writers == (1,)  # the rescan's own writers are closed when it ends
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents
