"""restore and export when the store or the database fails under them: a file the store
cannot read is that file's error and the run goes on; a database gone away stops the run
with one line, the summary and exit 4; a job whose JSON cannot be made is that job's error."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from comsa_migrate.cli import main
from comsa_migrate.errors import RunStopped
from comsa_migrate.restore import RestoreOptions, restore

from .tree_store_helpers import store_file

JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"
BIG = bytes(range(256)) * 2048  # 512 KiB: read by a writer thread, not with its batch


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def stored(sample_tree: Path, dsn: str) -> str:
    """The sample backfilled with --file-store db, and one big output stored besides."""
    result = run("backfill", sample_tree, "--dsn", dsn, "-q", "--file-store", "db")
    assert result.exit_code == 0, result.output
    store_file(dsn, JOB, f"outputs/{JOB}/big.bin", BIG, 1_700 * 10**15)
    return dsn


def dead_connection(dsn: str) -> psycopg.Connection[Any]:
    """A real connection whose server process has been ended: the database gone away."""
    conn = psycopg.connect(dsn, autocommit=True)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    return conn


def test_a_content_the_store_cannot_read_is_that_files_error_and_the_rest_is_written(
    stored: str, empty_dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    with psycopg.connect(stored, autocommit=True) as conn:
        # the writer threads' store reads where the store's tables are not: each read fails
        summary = restore(conn, RestoreOptions(target), lambda: psycopg.connect(empty_dsn))

    assert summary.actions["written"] == 27
    assert [(p.code, p.path) for p in summary.errors] == [
        ("store_read_failed", f"outputs/{JOB}/big.bin")
    ]
    assert not (target / "outputs" / JOB / "big.bin").exists()
    assert not [p for p in target.rglob(".*")], "no temporary file is left behind"


def test_a_database_gone_away_stops_the_restore_with_one_line_the_summary_and_exit_4(
    stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("comsa_migrate.cli.restore.connect", lambda target: dead_connection(stored))

    result = run("restore", tmp_path / "data", "--dsn", stored, "-q")

    assert result.exit_code == 4, result.output
    assert "comsa-migrate: error: the database went away" in result.stderr
    assert "Restore into" in result.stdout and "Traceback" not in result.output
    assert not (tmp_path / "data" / "outputs" / JOB / "big.bin").exists()
    assert not [p for p in (tmp_path / "data").rglob(".*")]


def test_a_database_gone_away_stops_the_export_with_the_summary_of_what_was_written(
    stored: str, tmp_path: Path
) -> None:
    with psycopg.connect(stored, autocommit=True) as conn:
        from comsa_migrate.export import ExportOptions, export

        with pytest.raises(RunStopped) as stopped:
            export(conn, ExportOptions(tmp_path / "data"), lambda: dead_connection(stored))

    assert stopped.value.exit_code == 4
    assert "the database went away" in str(stopped.value)
    assert stopped.value.summary.jobs >= 1


def test_a_job_whose_json_cannot_be_made_is_that_jobs_error_and_the_rest_is_exported(
    stored: str, tmp_path: Path
) -> None:
    with psycopg.connect(stored, autocommit=True) as conn:
        # a number beyond a double (not a whole one, which jsonb writes out in digits)
        # beside an integer beyond 64 bits: JSON that neither JSON writer takes
        huge = "1" + "0" * 400 + ".5"
        conn.execute(
            "UPDATE jobs SET result = %s::jsonb WHERE id = %s",
            [f'{{"a": {huge}, "b": 123456789012345678901234567890}}', JOB],
        )

    result = run("export", tmp_path / "data", "--dsn", stored, "-q")

    assert result.exit_code == 1, result.output
    assert f"job_json_failed  jobs/{JOB}.json" in result.output
    assert not (tmp_path / "data" / "jobs" / f"{JOB}.json").exists()
    assert (tmp_path / "data" / "outputs" / JOB / "big.bin").read_bytes() == BIG
    assert len(list((tmp_path / "data" / "jobs").iterdir())) > 1


def test_an_upload_that_is_not_valid_base64_is_that_files_error_and_never_other_bytes(
    stored: str, tmp_path: Path
) -> None:
    from comsa_migrate.db.migrations import create_input_files_table

    with psycopg.connect(stored, autocommit=True) as conn:
        create_input_files_table(conn)
        conn.execute("DELETE FROM job_input_files")
        conn.cursor().executemany(
            "INSERT INTO job_input_files (job_id, filename, content_b64) VALUES (%s, %s, %s)",
            [
                (JOB, "odd.csv", "SUQscTEKMSx5Cg*="),  # a character that is not base64
                (JOB, "short.csv", "SUQscTEKMSx5C"),  # bad padding
                (JOB, "wrapped.csv", "SUQscTEK\nMSx5Cg=="),  # a line break: fine
            ],
        )

    result = run("export", tmp_path / "data", "--dsn", stored, "-q")

    assert result.exit_code == 1, result.output
    assert f"input_not_base64  uploads/{JOB}/odd.csv" in result.output
    assert f"input_not_base64  uploads/{JOB}/short.csv" in result.output
    assert "Traceback" not in result.output
    uploads = tmp_path / "data" / "uploads" / JOB
    assert not (uploads / "odd.csv").exists() and not (uploads / "short.csv").exists()
    assert (uploads / "wrapped.csv").read_bytes() == b"ID,q1\n1,y\n"


def _input_files(dsn: str, rows: list[tuple[str, str, str]]) -> None:
    from comsa_migrate.db.migrations import create_input_files_table

    with psycopg.connect(dsn, autocommit=True) as conn:
        create_input_files_table(conn)
        conn.execute("DELETE FROM job_input_files")
        conn.cursor().executemany(
            "INSERT INTO job_input_files (job_id, filename, content_b64) VALUES (%s, %s, %s)", rows
        )


def test_uploads_over_the_batchs_budget_are_read_one_at_a_time_and_written_the_same(
    stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch brings the base64 of its small uploads up to a budget; the others are read
    by the writer threads, one at a time, so memory does not grow with the uploads."""
    from comsa_migrate.db import exported_jobs

    small = {f"small{n}.csv": bytes([n]) * 1000 for n in range(6)}
    uploads = {**small, "big.csv": BIG}
    _input_files(stored, [(JOB, name, base64.b64encode(b).decode()) for name, b in uploads.items()])
    monkeypatch.setattr(exported_jobs, "BATCH_CONTENT_BUDGET", 3 * 1400)
    with psycopg.connect(stored, autocommit=True) as conn:
        [batch] = list(exported_jobs.export_batches(conn, exported_jobs.JobSelection((JOB,))))

    with_batch = {name for name, content in batch.inputs[JOB] if content is not None}
    assert with_batch == {"small0.csv", "small1.csv", "small2.csv"}  # big.csv: over SMALL_CONTENT
    result = run("export", tmp_path / "data", "--dsn", stored, "-q")
    assert result.exit_code == 0, result.output
    for name, content in uploads.items():
        assert (tmp_path / "data" / "uploads" / JOB / name).read_bytes() == content


def test_an_upload_deleted_before_its_writer_reads_it_is_that_files_error(
    stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import comsa_migrate.export as export_module

    _input_files(stored, [(JOB, "big.csv", base64.b64encode(BIG).decode())])
    real = export_module.read_input_file

    def deleted_first(conn: psycopg.Connection[Any], job_id: str, filename: str) -> str:
        with psycopg.connect(stored, autocommit=True) as dashboard:
            dashboard.execute("DELETE FROM job_input_files WHERE filename = %s", [filename])
        return real(conn, job_id, filename)

    monkeypatch.setattr(export_module, "read_input_file", deleted_first)
    result = run("export", tmp_path / "data", "--dsn", stored, "-q")

    assert result.exit_code == 1, result.output
    assert f"input_unreadable  uploads/{JOB}/big.csv" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "uploads" / JOB / "big.csv").exists()


def test_no_connection_for_a_writer_thread_stops_the_export_with_its_summary(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    """The only file read by a writer thread here is a large upload of job_input_files: the
    connection it cannot have is the database gone away (exit 4), not a crash."""
    from comsa_migrate.errors import DatabaseUnavailable
    from comsa_migrate.export import ExportOptions, export

    assert run("backfill", sample_tree, "--dsn", dsn, "-q", "--file-store", "db").exit_code == 0
    _input_files(dsn, [(JOB, "big.csv", base64.b64encode(BIG).decode())])

    def no_connection() -> psycopg.Connection[Any]:
        raise DatabaseUnavailable("connection refused")

    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(RunStopped) as stopped:
        export(conn, ExportOptions(tmp_path / "data"), no_connection)

    assert stopped.value.exit_code == 4
    assert "the database went away: connection refused" in str(stopped.value)
    assert stopped.value.summary.jobs >= 1
    assert not (tmp_path / "data" / "uploads" / JOB / "big.csv").exists()
