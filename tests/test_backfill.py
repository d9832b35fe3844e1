"""Backfill behaviour on a real database: reruns, updates, conflicts, failures, signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .helpers import (
    HeldJobs,
    age_tree,
    edit_job_json,
    held_jobs,
    in_reading_order,
    make_tree,
    row_digest,
    spawn_backfill,
    stored_contents,
    table_counts,
    write_job,
)

FAILED_JOB = "a817efa9-c5e7-4731-a6ee-ff6d9228f310"  # openva, failed, 2 log lines, no files
COMPLETED_JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"  # pipeline, 11 log lines, 2 outputs


def test_unchanged_jobs_are_decided_from_stat_without_reading_the_json(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    age_tree(sample_tree)
    cli("backfill", sample_tree, "--dsn", dsn)
    # Same size, same mtime, same inode, but unreadable content: only a re-read would notice.
    path = sample_tree / "jobs" / f"{FAILED_JOB}.json"
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "11 unchanged" in result.stdout
    assert "invalid_json" not in result.stdout


def test_a_job_written_moments_ago_is_reread_on_the_next_run_and_found_unchanged(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    edit_job_json(sample_tree, FAILED_JOB)  # rewritten now: its fingerprint is not trusted
    before = row_digest(conn)

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert "0 inserted, 0 updated, 11 unchanged" in result.stdout
    assert row_digest(conn) == before
    states = conn.execute(
        "SELECT count(*) FROM comsa_migrate.job_state WHERE fingerprint LIKE 'racy-%%'"
    ).fetchone()
    assert states == (1,)


def test_a_deleted_job_row_is_inserted_again_with_its_logs_and_files(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    age_tree(sample_tree)
    cli("backfill", sample_tree, "--dsn", dsn)
    contents = stored_contents(conn)
    conn.execute("DELETE FROM jobs WHERE id = %s", [COMPLETED_JOB])

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "1 inserted, 0 updated, 10 unchanged" in result.stdout
    assert stored_contents(conn) == contents


def test_a_changed_json_updates_the_row_and_replaces_its_logs(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    edit_job_json(
        sample_tree,
        FAILED_JOB,
        status="completed",
        log=["[2026-01-01 19:54:01] Starting openVA processing", "[2026-01-01 19:55:00] Done"],
    )

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "0 inserted, 1 updated, 10 unchanged" in result.stdout
    assert conn.execute("SELECT status FROM jobs WHERE id = %s", [FAILED_JOB]).fetchone() == (
        "completed",
    )
    logs = conn.execute(
        "SELECT timestamp::text, message FROM job_logs WHERE job_id = %s ORDER BY id",
        [FAILED_JOB],
    ).fetchall()
    assert logs == [
        ("2026-01-01 19:54:01", "[2026-01-01 19:54:01] Starting openVA processing"),
        ("2026-01-01 19:55:00", "[2026-01-01 19:55:00] Done"),
    ]


def test_a_removed_output_file_removes_its_job_files_row_and_a_grown_one_updates_its_size(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    outputs = sample_tree / "outputs" / COMPLETED_JOB
    (outputs / "causes.csv").unlink()
    with open(outputs / "calibration_summary.csv", "a") as fh:
        fh.write("extra,row\n")

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    rows = conn.execute(
        "SELECT file_name, file_size FROM job_files WHERE job_id = %s", [COMPLETED_JOB]
    ).fetchall()
    assert rows == [("calibration_summary.csv", 335 + len("extra,row\n"))]
    assert table_counts(conn)["job_files"] == 15


def test_a_job_changed_in_the_database_is_a_conflict_and_is_left_alone(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    # what the live dashboard does at start-up: 'running' jobs become 'failed'
    conn.execute("UPDATE jobs SET status = 'running' WHERE id = %s", [COMPLETED_JOB])
    edit_job_json(sample_tree, COMPLETED_JOB, country="Kenya")

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 1
    assert "1 conflicts" in result.stdout
    assert f"conflict  {COMPLETED_JOB}\n      jobs/{COMPLETED_JOB}.json\n" in result.stdout
    row = conn.execute("SELECT status, country FROM jobs WHERE id = %s", [COMPLETED_JOB])
    assert row.fetchone() == ("running", "Mozambique")


def test_a_log_row_changed_in_the_database_is_a_conflict_too(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    conn.execute(
        "INSERT INTO job_logs (job_id, message) VALUES (%s, 'restarted by the dashboard')",
        [FAILED_JOB],
    )
    edit_job_json(sample_tree, FAILED_JOB, country="Kenya")

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 1
    assert "1 conflicts" in result.stdout
    assert table_counts(conn)["job_logs"] == 90


def test_force_overwrites_a_conflict(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    conn.execute("UPDATE jobs SET status = 'running' WHERE id = %s", [COMPLETED_JOB])
    edit_job_json(sample_tree, COMPLETED_JOB, country="Kenya")
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 1

    result = cli("backfill", sample_tree, "--dsn", dsn, "--force")

    assert result.exit_code == 0, result.output
    assert "0 inserted, 1 updated, 10 unchanged, 0 skipped, 0 conflicts" in result.stdout
    row = conn.execute("SELECT status, country FROM jobs WHERE id = %s", [COMPLETED_JOB])
    assert row.fetchone() == ("completed", "Kenya")
    # and the next run without --force is quiet again
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0


def test_a_row_the_tool_never_wrote_is_a_conflict_when_it_differs(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO jobs (id, type, status) VALUES (%s, 'openva', 'running')", [FAILED_JOB]
    )

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 1
    assert "10 inserted, 0 updated, 0 unchanged, 0 skipped, 1 conflicts" in result.stdout
    row = conn.execute("SELECT status FROM jobs WHERE id = %s", [FAILED_JOB]).fetchone()
    assert row == ("running",)


def test_rows_already_equal_to_what_the_tool_would_write_are_adopted_silently(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)
    conn.execute("TRUNCATE comsa_migrate.job_state")  # as if another copy of the tool wrote them
    before = row_digest(conn)

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "0 inserted, 0 updated, 11 unchanged, 0 skipped, 0 conflicts" in result.stdout
    assert row_digest(conn) == before
    assert conn.execute("SELECT count(*) FROM comsa_migrate.job_state").fetchone() == (11,)


def test_a_job_the_database_refuses_is_rolled_back_alone_and_the_run_goes_on(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        """
        CREATE FUNCTION refuse_kenya() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.message LIKE '%%Kenya%%' THEN RAISE EXCEPTION 'no logs about Kenya'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_kenya BEFORE INSERT ON job_logs
            FOR EACH ROW EXECUTE FUNCTION refuse_kenya();
        """
    )
    edit_job_json(sample_tree, FAILED_JOB, log=["[2026-01-01 19:54:01] Moved to Kenya"])

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 1
    assert "10 inserted, 0 updated, 0 unchanged, 1 skipped" in result.stdout
    assert f"db_error  {FAILED_JOB}" in result.stdout
    assert "no logs about Kenya" in result.stdout
    assert conn.execute("SELECT count(*) FROM jobs WHERE id = %s", [FAILED_JOB]).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM comsa_migrate.job_state WHERE job_id = %s", [FAILED_JOB]
    ).fetchone() == (0,)


@pytest.mark.parametrize("server_zone", ["America/New_York", "Asia/Kolkata"])
def test_timestamps_are_stored_as_given_whatever_the_server_time_zone(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any], server_zone: str
) -> None:
    dbname = conn.info.dbname
    conn.execute(f"ALTER DATABASE \"{dbname}\" SET timezone = '{server_zone}'")
    write_job(
        sample_tree,
        "0a1b2c3d-0000-4000-8000-00000000000a",
        created_at="2026-01-02T10:00:00+02:00",
        started_at="2026-01-02 08:00:05.250000",
    )

    cli("backfill", sample_tree, "--dsn", dsn)

    rows = conn.execute(
        "SELECT created_at::text, started_at::text FROM jobs WHERE id IN (%s, %s) ORDER BY id",
        ["0a1b2c3d-0000-4000-8000-00000000000a", "1311b121-970f-4268-b5ff-ebdaf0bdadfd"],
    ).fetchall()
    assert rows == [
        ("2026-01-02 08:00:00", "2026-01-02 08:00:05.25"),
        ("2025-12-30 23:30:42", "2025-12-30 23:30:44"),
    ]


def test_job_state_digest_matches_the_rows_written(
    cli: Any, dsn: str, quirks_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", quirks_tree, "--dsn", dsn)

    mismatched = conn.execute(
        "SELECT job_id FROM comsa_migrate.job_state"
        " WHERE content_digest <> md5(comsa_migrate.stored_content(job_id)::text)"
    ).fetchall()
    assert mismatched == []
    assert conn.execute("SELECT count(*) FROM comsa_migrate.job_state").fetchone() == (4,)


#: the tree of the tests that stop a backfill mid-run, and how many of its jobs (the first
#: in the order the backfill reads them) are left free: the backfill stops at the first
#: batch that holds a held job, inside that batch's transaction
MID_RUN_JOBS, FREE_JOBS = 200, 40


def _held_mid_run(data_dir: Path, dsn: str, held: HeldJobs) -> subprocess.Popen[str]:
    """A backfill (batches of 5) of a MID_RUN_JOBS tree, stopped at a held job mid-run."""
    make_tree(data_dir, MID_RUN_JOBS)
    assert held.hold(in_reading_order(data_dir)[FREE_JOBS:]) == MID_RUN_JOBS - FREE_JOBS
    process = spawn_backfill(data_dir, "--dsn", dsn, "--batch-size", "5")
    held.wait_for_a_writer()
    return process


@pytest.mark.slow
def test_sigkill_leaves_no_partial_job_and_a_rerun_converges_to_a_clean_run(
    tmp_path: Path, dsn: str, conn: psycopg.Connection[Any], request: Any
) -> None:
    data_dir = tmp_path / "data"
    clean_dsn = request.getfixturevalue("empty_dsn")
    with held_jobs(dsn) as held:
        process = _held_mid_run(data_dir, dsn, held)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    # every job that made it in is whole: 10 logs and 2 files each, and its bookkeeping;
    # the batch it was killed in (jobs of it written, not committed) left nothing
    partial = conn.execute(
        "SELECT j.id FROM jobs j"
        " LEFT JOIN comsa_migrate.job_state s ON s.job_id = j.id"
        " WHERE s.job_id IS NULL"
        " OR (SELECT count(*) FROM job_logs l WHERE l.job_id = j.id) <> 10"
        " OR (SELECT count(*) FROM job_files f WHERE f.job_id = j.id) <> 2"
    ).fetchall()
    assert partial == []
    assert table_counts(conn)["jobs"] < MID_RUN_JOBS

    rerun = spawn_backfill(data_dir, "--dsn", dsn)
    clean = spawn_backfill(data_dir, "--dsn", clean_dsn)
    assert rerun.wait(timeout=120) == 0, rerun.communicate()[1]
    assert clean.wait(timeout=120) == 0, clean.communicate()[1]
    with psycopg.connect(clean_dsn, autocommit=True) as clean_conn:
        assert stored_contents(conn) == stored_contents(clean_conn)
        assert (
            table_counts(conn)
            == table_counts(clean_conn)
            == {
                "jobs": MID_RUN_JOBS,
                "job_logs": 10 * MID_RUN_JOBS,
                "job_files": 2 * MID_RUN_JOBS,
            }
        )


def test_sigint_finishes_the_jobs_in_flight_prints_the_summary_and_exits_130(
    tmp_path: Path, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with held_jobs(dsn) as held:
        process = _held_mid_run(tmp_path / "data", dsn, held)
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted" in stdout
    written = table_counts(conn)
    assert 0 < written["jobs"] < MID_RUN_JOBS
    assert written["job_logs"] == 10 * written["jobs"]
    assert f"{written['jobs']} inserted" in stdout
