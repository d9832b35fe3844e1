"""A job's write finds the rows it needs by key however small the tables were when its
plans were made.

PL/pgSQL keeps a statement's plan for the session: after five runs, a generic plan made
for the tables as they then were. Made while `jobs` was analyzed empty or small (a DBA's
VACUUM ANALYZE after init-db, a dashboard that has run a few jobs), it read `jobs` whole
for every job, the foreign-key checks of each job's logs and files too, and a backfill
of 20,000 jobs took ten times as long, quadratically more with more jobs. The tool's
transactions plan without sequential scans, so these plans go by key, the way they go
on tables that were never analyzed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from .helpers import finish, make_tree, running_daemon, spawn_backfill, wait_until

JOBS = 40
TABLES = ("public.jobs", "public.job_logs", "public.job_files", "comsa_migrate.job_state")


def analyzed_empty(dsn: str) -> None:
    """The tables as a VACUUM ANALYZE leaves them empty: known to hold no rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")
        known = conn.execute(
            "SELECT count(*) FROM pg_class WHERE oid = ANY(%s::regclass[]) AND reltuples = 0",
            [list(TABLES)],
        ).fetchone()
    assert known == (len(TABLES),)


def scans_of_jobs(dsn: str) -> int:
    """Sequential scans of `jobs` so far, every session's (a session's count is in once it
    has ended or gone idle)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'public.jobs'::regclass"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "options",
    [(), ("--statement-timeout", "1h")],  # the apply sets the limits, or a statement before
    ids=["limits-in-the-apply", "limits-sent-before"],
)
def test_a_backfill_into_tables_analyzed_empty_finds_its_rows_by_key(
    dsn: str, tmp_path: Path, options: tuple[str, ...]
) -> None:
    make_tree(tmp_path, JOBS)
    analyzed_empty(dsn)
    before = scans_of_jobs(dsn)

    finish(spawn_backfill(tmp_path, "--dsn", dsn, "--batch-size", "10", *options))

    # one a job, or more, before: the 40th job's write read 39 rows of jobs to find its own
    assert scans_of_jobs(dsn) - before < 5


def test_the_daemon_writing_into_tables_analyzed_empty_finds_its_rows_by_key(
    dsn: str, tmp_path: Path
) -> None:
    make_tree(tmp_path, JOBS)
    analyzed_empty(dsn)
    before = scans_of_jobs(dsn)

    with running_daemon(dsn, tmp_path, batch_size=10):
        wait_until(lambda: _jobs(dsn) == JOBS, what="the catch-up to write every job")
    # the daemon's sessions have ended: their counts are in
    assert scans_of_jobs(dsn) - before < 5


def _jobs(dsn: str) -> int:
    """Jobs written so far, counted without a scan of `jobs`."""
    with psycopg.connect(dsn) as conn:
        row: Any = conn.execute("SELECT count(*) FROM comsa_migrate.job_state").fetchone()
    return int(row[0])
