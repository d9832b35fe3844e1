"""The acceptance run: the real legacy sample tree, end to end through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from .helpers import row_digest, table_counts


def test_sample_tree_writes_11_jobs_89_logs_16_files_and_the_expected_warnings(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "11 inserted, 0 updated, 0 unchanged, 0 skipped, 0 conflicts" in result.stdout
    assert "rows        jobs 11, job_logs 89, job_files 16" in result.stdout
    assert "missing_input_file 2" in result.stdout
    assert "orphan_output_dir 1" in result.stdout
    assert "invalid_job_dir 1" in result.stdout
    assert table_counts(conn) == {"jobs": 11, "job_logs": 89, "job_files": 16}


def test_second_run_reports_every_job_unchanged_and_writes_nothing(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    before = row_digest(conn)

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "0 inserted, 0 updated, 11 unchanged" in result.stdout
    assert "rows        jobs 0, job_logs 0, job_files 0" in result.stdout
    assert row_digest(conn) == before
