"""The file store as the least a role may have: a writer granted by init-db (no CREATE, no
TEMP) stores, checks and cleans; and through PgBouncer in transaction pooling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .file_store_helpers import stored_rows
from .pgbouncer import PgBouncer
from .test_privileges import Roles, as_user, can_create_anything, lock_down, roles  # noqa: F401

#: the sample's 11 job JSONs and the 16 files of its jobs
SAMPLE_FILES = 27


def test_a_writer_keeps_checks_and_cleans_the_db_store_with_the_rights_init_db_gave(
    cli: Any,
    dsn: str,
    roles: Roles,
    sample_tree: Path,  # noqa: F811 - the fixture
) -> None:
    writer = roles.create("writer")
    lock_down(dsn)
    cli("init-db", "--dsn", dsn, "--grant-writer", writer)
    as_writer = as_user(dsn, writer)

    first = cli("backfill", sample_tree, "--dsn", as_writer, "--file-store", "db")
    report = cli("report", sample_tree, "--dsn", as_writer, "--file-store", "db")
    gc = cli("gc", "--dsn", as_writer, "--file-store", "db", "--yes", "--min-age", "0s")

    assert not can_create_anything(dsn, writer)
    assert first.exit_code == 0, first.output
    assert len(stored_rows(dsn)) == SAMPLE_FILES
    assert report.exit_code == 0, report.output
    assert gc.exit_code == 0, gc.output


@pytest.mark.parametrize("pool_mode", ["transaction"])
def test_the_db_store_works_through_transaction_pooling(
    cli: Any,
    dsn: str,
    sample_tree: Path,
    pgbouncer: Callable[..., PgBouncer],
    pool_mode: str,
) -> None:
    pooled = pgbouncer(pool_mode=pool_mode, pool_size=2).dsn(dsn)
    args = ("--dsn", pooled, "--file-store", "db", "--batch-size", "3")

    first = cli("backfill", sample_tree, *args)
    (next((sample_tree / "outputs").rglob("*.csv"))).write_text("changed\n")
    rerun = cli("backfill", sample_tree, *args)
    report = cli("report", sample_tree, *args[:4])

    assert first.exit_code == 0, first.output
    assert rerun.exit_code == 0, rerun.output
    assert report.exit_code == 0, report.output
    assert len(stored_rows(dsn)) == SAMPLE_FILES
