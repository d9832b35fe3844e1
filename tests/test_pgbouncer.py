"""comsa-migrate through a real PgBouncer (tests/pgbouncer.py) in transaction and in session
pooling, with two server connections per pool: backfills, reruns, the report and the
daemon's lock work as they do on a direct connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate

from .conftest import Databases, clean_run_of
from .helpers import (
    finish,
    job_counts,
    job_row,
    make_empty_tree,
    new_job_id,
    running_daemon,
    spawn_backfill,
    stored_contents,
    table_counts,
    wait_until,
    write_job_atomically,
)
from .pgbouncer import PgBouncer

GENERATED_JOBS = 300
#: server connections per pool: two, so that transaction pooling shares them; in session
#: pooling each client keeps one, and a backfill opens three (--jobs 2 and its reader)
POOL_SIZE = {"transaction": 2, "session": 4}
#: small batches, so that each connection runs the same statements many times over
SMALL_BATCHES = ("--batch-size", "20")


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred sample-shaped jobs, read only for these tests."""
    return generate(tmp_path_factory.mktemp("pooled") / "data", TreeShape(GENERATED_JOBS))


@pytest.fixture(scope="module")
def clean_run(generated_tree: Path, databases: Databases, template_db: str) -> Any:
    """What one backfill alone writes from the generated tree on a direct connection."""
    with clean_run_of(databases, template_db, generated_tree) as reference:
        yield reference


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_the_sample_is_backfilled_rerun_unchanged_and_reported_through_pgbouncer(
    cli: Any,
    dsn: str,
    sample_tree: Path,
    pgbouncer: Callable[..., PgBouncer],
    pool_mode: str,
) -> None:
    pooled = pgbouncer(pool_mode=pool_mode, pool_size=POOL_SIZE[pool_mode]).dsn(dsn)

    first = cli("backfill", sample_tree, "--dsn", pooled)
    rerun = cli("backfill", sample_tree, "--dsn", pooled)
    report = cli("report", sample_tree, "--dsn", pooled)

    assert first.exit_code == 0, first.output
    assert job_counts(first.stdout) == (11, 0, 0, 0, 0)
    assert rerun.exit_code == 0, rerun.output
    assert job_counts(rerun.stdout) == (0, 0, 11, 0, 0)
    assert report.exit_code == 0, report.output
    assert "11 unchanged" in " ".join(report.stdout.split())
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == {"jobs": 11, "job_logs": 89, "job_files": 16}


@pytest.mark.slow
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_a_generated_tree_is_backfilled_as_on_a_direct_connection_and_rerun_unchanged(
    dsn: str,
    generated_tree: Path,
    clean_run: Any,
    pgbouncer: Callable[..., PgBouncer],
    pool_mode: str,
) -> None:
    contents, counts = clean_run
    pooled = pgbouncer(pool_mode=pool_mode, pool_size=POOL_SIZE[pool_mode]).dsn(dsn)

    first = finish(spawn_backfill(generated_tree, "--dsn", pooled, *SMALL_BATCHES))
    rerun = finish(spawn_backfill(generated_tree, "--dsn", pooled, *SMALL_BATCHES))

    assert job_counts(first) == (GENERATED_JOBS, 0, 0, 0, 0)
    assert job_counts(rerun) == (0, 0, GENERATED_JOBS, 0, 0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_two_backfills_at_once_through_transaction_pooling_write_what_one_clean_run_writes(
    dsn: str,
    generated_tree: Path,
    clean_run: Any,
    pgbouncer: Callable[..., PgBouncer],
    jobs: str,
) -> None:
    contents, counts = clean_run
    pooled = pgbouncer(pool_mode="transaction").dsn(dsn)

    first = spawn_backfill(generated_tree, "--dsn", pooled, "--jobs", jobs, *SMALL_BATCHES)
    second = spawn_backfill(generated_tree, "--dsn", pooled, "--jobs", jobs, *SMALL_BATCHES)
    outputs = [finish(first), finish(second)]

    for output in outputs:
        inserted, updated, unchanged, skipped, conflicts = job_counts(output)
        assert (updated, skipped, conflicts) == (0, 0, 0)
        assert inserted + unchanged == GENERATED_JOBS
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


def test_a_second_daemon_of_the_same_name_exits_3_through_transaction_pooling(
    cli: Any, dsn: str, tmp_path: Path, pgbouncer: Callable[..., PgBouncer]
) -> None:
    pooled = pgbouncer(pool_mode="transaction").dsn(dsn)
    data = make_empty_tree(tmp_path)
    job_id = new_job_id()

    with running_daemon(pooled, data, name="web1"):
        second = cli("sync", data, "--dsn", pooled, "--name", "web1")
        write_job_atomically(data, job_id)
        wait_until(lambda: job_row(dsn, job_id), what="the first daemon to sync a job")

    assert second.exit_code == 3, second.output
    assert "another sync daemon named web1 holds its lock" in second.stderr


SESSION_SETTINGS = (
    "synchronous_commit",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
)


def server_settings(dsn: str) -> list[tuple[int, dict[str, str]]]:
    """Each server connection of the pool as the next client meets it: its backend pid and
    the settings a client's session could have left behind."""
    seen = []
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(POOL_SIZE["transaction"] * 3):
            row = conn.execute(
                "SELECT pg_backend_pid(), "
                + ", ".join(f"current_setting('{name}')" for name in SESSION_SETTINGS)
            ).fetchone()
            assert row is not None
            seen.append((int(row[0]), dict(zip(SESSION_SETTINGS, row[1:], strict=True))))
    return seen


def test_no_setting_of_a_backfill_is_left_on_the_pools_server_connections(
    dsn: str, generated_tree: Path, pgbouncer: Callable[..., PgBouncer]
) -> None:
    """The pool's next client (the dashboard) finds the server connections as they were:
    synchronous_commit on, the role's timeouts and isolation."""
    pooled = pgbouncer(pool_mode="transaction", pool_size=POOL_SIZE["transaction"]).dsn(dsn)
    before = {tuple(settings.items()) for _, settings in server_settings(pooled)}

    finish(spawn_backfill(generated_tree, "--dsn", pooled, *SMALL_BATCHES))
    finish(spawn_backfill(generated_tree, "--dsn", pooled, "--force", *SMALL_BATCHES))
    after = server_settings(pooled)

    assert {tuple(settings.items()) for _, settings in after} == before
    assert all(settings["synchronous_commit"] == "on" for _, settings in after)
