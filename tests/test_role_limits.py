"""A DBA's limits on the role do not cut the tool's own transactions short: it sets its own.

The role gets statement_timeout = 50ms, lock_timeout = 10ms and
idle_in_transaction_session_timeout = 100ms, as a managed PostgreSQL may have them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bench.generate import TreeShape, generate

from .conftest import Databases, clean_run_of
from .helpers import (
    finish,
    job_counts,
    running_daemon,
    spawn_backfill,
    stored_contents,
    table_counts,
    wait_until,
)
from .test_privileges import Roles, as_user

JOBS = 600
ROLE_LIMITS = {
    "statement_timeout": "50ms",
    "lock_timeout": "10ms",
    "idle_in_transaction_session_timeout": "100ms",
}


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("limits") / "data", TreeShape(JOBS))


@pytest.fixture(scope="module")
def clean_run(generated_tree: Path, databases: Databases, template_db: str) -> Any:
    """What one backfill writes on a role without limits: (contents, row counts)."""
    with clean_run_of(databases, template_db, generated_tree) as reference:
        yield reference


@pytest.fixture
def limited(dsn: str, cli: Any, admin_dsn: str) -> Iterator[str]:
    """The test database's DSN as a writer role with a DBA's limits on it."""
    roles = Roles(admin_dsn)
    try:
        role = roles.create("limited")
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            for setting, value in ROLE_LIMITS.items():
                conn.execute(
                    sql.SQL("ALTER ROLE {} SET {} = {}").format(
                        sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)
                    )
                )
        granted = cli("init-db", "--dsn", dsn, "--grant-writer", role)
        assert granted.exit_code == 0, granted.output
        limited_dsn = as_user(dsn, role)
        with psycopg.connect(limited_dsn) as conn:
            shown = conn.execute("SHOW statement_timeout").fetchone()
        assert shown == ("50ms",)
        yield limited_dsn
    finally:
        roles.drop_all()


@pytest.mark.slow
def test_a_backfill_as_a_role_with_short_limits_writes_what_one_clean_run_writes(
    generated_tree: Path, dsn: str, limited: str, clean_run: Any, cli: Any
) -> None:
    contents, counts = clean_run

    output = finish(spawn_backfill(generated_tree, "--dsn", limited, "--batch-size", "200"))
    rerun = finish(spawn_backfill(generated_tree, "--dsn", limited))
    report = cli("report", generated_tree, "--dsn", limited)

    assert job_counts(output) == (JOBS, 0, 0, 0, 0)
    assert job_counts(rerun) == (0, 0, JOBS, 0, 0)
    assert report.exit_code == 0, report.output
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


@pytest.mark.slow
def test_two_backfills_at_once_as_a_role_with_short_limits_both_finish_exactly(
    generated_tree: Path, dsn: str, limited: str, clean_run: Any
) -> None:
    """Each job's lock wait, behind the other writer of the same job, outlasts the role's
    lock_timeout of 10 ms: the tool's own lock timeout (none by default) applies."""
    contents, counts = clean_run
    first = spawn_backfill(generated_tree, "--dsn", limited)
    second = spawn_backfill(generated_tree, "--dsn", limited)
    outputs = [finish(first), finish(second)]

    for output in outputs:
        assert " 0 skipped, 0 conflicts" in " ".join(output.split()), output
    assert sum(job_counts(output)[0] for output in outputs) == JOBS
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


@pytest.mark.slow
def test_the_daemons_catch_up_as_a_role_with_short_limits_syncs_every_job(
    generated_tree: Path, dsn: str, limited: str, clean_run: Any
) -> None:
    contents, counts = clean_run

    with running_daemon(limited, generated_tree, ready=False) as daemon:
        wait_until(daemon.ready.is_set, 120, "the daemon to catch up")
        assert daemon.stats()["insert"] == JOBS
        assert daemon.stats()["errors"] == 0

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


def test_a_large_output_kept_as_a_role_with_short_limits_is_stored_whole(
    sample_tree: Path, dsn: str, limited: str, cli: Any
) -> None:
    """The file store's puts run with the tool's limits too: the COPY of a large content
    takes longer than the role's 50 ms statement_timeout, and is stored all the same."""
    from .file_store_helpers import age, content_of, digest, stored_rows

    job = "1311b121-970f-4268-b5ff-ebdaf0bdadfd"
    big = sample_tree / "outputs" / job / "posterior.rds"
    big.write_bytes(bytes(range(256)) * (160 * 1024))  # 40 MiB
    age(big)

    result = cli("backfill", str(sample_tree), "--dsn", limited, "--file-store", "db")

    assert result.exit_code in (0, 1), result.output  # 1: the sample's own warnings
    sha, size, _ = stored_rows(dsn)[f"outputs/{job}/posterior.rds"]  # read back unlimited
    assert size == big.stat().st_size and sha == digest(big.read_bytes())
    assert content_of(dsn, sha) == big.read_bytes()
