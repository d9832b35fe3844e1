"""The dashboard reads back what comsa-migrate writes: its paths, its logs in file order, its
later tables (users, job_input_files), and a database migrated by the previous release."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import FIXTURES
from .helpers import age_tree, running_daemon, table_counts, wait_until, write_job

JOB = "ef3bd2ad-ce16-45fc-bc09-6be28646ecbf"  # vacalibration with an upload and an output
OWNED_BY_THE_DASHBOARD = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"  # in the 0.1.0 fixture
DASHBOARD_SCHEMA = FIXTURES / "dashboard-schema"
#: the schema's "Get Job Details with Logs", for every job at once
JOB_DETAILS_WITH_LOGS = """
SELECT j.id::text,
       json_agg(json_build_object('timestamp', l.timestamp, 'message', l.message)
                ORDER BY l.timestamp) AS logs
FROM jobs j LEFT JOIN job_logs l ON j.id = l.job_id
GROUP BY j.id
"""


def legacy_lines(data: Path) -> dict[str, list[str]]:
    """Each job's log lines as its JSON holds them."""
    lines = {}
    for path in (data / "jobs").glob("*.json"):
        doc = json.loads(path.read_bytes())
        if "status" in doc:
            log = doc.get("log") or []
            lines[path.stem] = [log] if isinstance(log, str) else log
    return lines


def lines_by_time(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    return {
        job_id: [entry["message"] for entry in logs if entry["message"] is not None]
        for job_id, logs in conn.execute(JOB_DETAILS_WITH_LOGS).fetchall()
    }


@pytest.fixture
def dashboard_dsn(dsn: str) -> str:
    """A database as the newest dashboard has it: its 001, 002_users and 003 applied by
    hand (before comsa-migrate), and one user."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("002_users.sql", "003_input_file_storage.sql"):
            conn.execute((DASHBOARD_SCHEMA / name).read_text().encode())
        conn.execute(
            "INSERT INTO users (email, password_hash, role)"
            " VALUES ('analyst@example.org', 'x', 'user'), ('admin@example.org', 'x', 'admin')"
        )
    return dsn


@pytest.fixture
def fresh_dashboard_dsn(empty_dsn: str) -> str:
    """The dashboard's three migrations by hand on an empty database, nothing of ours."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for name in ("001_initial_schema.sql", "002_users.sql", "003_input_file_storage.sql"):
            conn.execute((DASHBOARD_SCHEMA / name).read_text().encode())
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('analyst@example.org', 'x')")
    return empty_dsn


def test_paths_are_written_as_the_dashboard_opens_them_from_its_backend_folder(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0

    path = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [JOB]).fetchone()
    assert path == (f"data/uploads/{JOB}/input.csv",)
    files = conn.execute(
        "SELECT file_path FROM job_files WHERE job_id = %s ORDER BY file_path", [JOB]
    ).fetchall()
    assert files == [
        (f"data/outputs/{JOB}/calibration_summary.csv",),
        (f"data/uploads/{JOB}/input.csv",),
    ]
    # each of them resolves from the dashboard's working folder, the parent of DATA_DIR
    backend = sample_tree.parent
    for (file_path,) in conn.execute("SELECT file_path FROM job_files").fetchall():
        assert file_path.startswith("data/")
        assert (backend / file_path).is_file()


def test_an_empty_path_prefix_writes_paths_relative_to_data_dir_as_the_schema_words_it(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("backfill", sample_tree, "--dsn", dsn, "--path-prefix", "").exit_code == 0

    path = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [JOB]).fetchone()
    assert path == (f"uploads/{JOB}/input.csv",)
    paths = {p for (p,) in conn.execute("SELECT file_path FROM job_files").fetchall()}
    assert all(p.startswith(("uploads/", "outputs/")) for p in paths)
    report = cli("report", sample_tree, "--dsn", dsn, "--path-prefix", "", "--format", "json")
    assert json.loads(report.stdout)["summary"]["jobs"]["by_action"]["unchanged"] == 11


def test_another_prefix_rewrites_every_path_without_a_conflict(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("backfill", sample_tree, "--dsn", dsn, "--path-prefix", "").exit_code == 0
    age_tree(sample_tree)
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0
    rerun = cli("backfill", sample_tree, "--dsn", dsn, "--path-prefix", "backend/data")

    assert rerun.exit_code == 0, rerun.output
    assert "0 inserted, 11 updated, 0 unchanged, 0 skipped, 0 conflicts" in rerun.stdout
    path = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [JOB]).fetchone()
    assert path == (f"backend/data/uploads/{JOB}/input.csv",)


def test_every_log_message_is_its_legacy_line_and_the_schemas_query_gives_file_order(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0

    expected = legacy_lines(sample_tree)
    assert lines_by_time(conn) == {job: lines for job, lines in expected.items()}
    messages = conn.execute("SELECT message FROM job_logs ORDER BY id").fetchall()
    assert sorted(m for (m,) in messages) == sorted(
        line for lines in expected.values() for line in lines
    )
    first = conn.execute(
        "SELECT timestamp::text, message FROM job_logs WHERE job_id = %s ORDER BY timestamp"
        " LIMIT 2",
        [JOB],
    ).fetchall()
    assert first == [
        ("2026-01-01 20:07:34", "[2026-01-01 20:07:34] Starting vacalibration"),
        (
            "2026-01-01 20:07:34.000001",
            f"[2026-01-01 20:07:34] Loading data from: data/uploads/{JOB}/input.csv",
        ),
    ]


@pytest.mark.slow
def test_thousands_of_jobs_with_same_second_lines_read_back_in_file_order(
    tmp_path: Path, cli: Any, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    data = tmp_path / "data"
    expected = {}
    for n in range(2000):
        job_id = str(uuid.UUID(int=n + 1, version=4))
        seconds = [0, 0, 0, 1, 1, 1, 1, 0, 2, 2][n % 7 :] + [2] * (n % 5)
        lines = [f"[2025-12-30 23:10:{s:02d}] step {i} of job {n}" for i, s in enumerate(seconds)]
        lines.insert(n % 4, f"a line without a time, {n}")  # takes the line before's time
        write_job(data, job_id, log=lines)
        expected[job_id] = lines
    (data / "outputs").mkdir()

    result = cli("backfill", data, "--dsn", dsn, "--batch-size", "500")

    assert result.exit_code == 0, result.output
    assert lines_by_time(conn) == expected
    # the dashboard's own read of one job's logs
    job_id = next(iter(expected))
    logs = conn.execute(
        "SELECT timestamp, message FROM job_logs WHERE job_id = $1 ORDER BY timestamp".replace(
            "$1", "%s"
        ),
        [job_id],
    ).fetchall()
    assert [m for _, m in logs] == expected[job_id]


def test_with_the_dashboards_later_migrations_uploads_and_owners_are_filled(
    cli: Any, fresh_dashboard_dsn: str, sample_tree: Path
) -> None:
    dsn = fresh_dashboard_dsn
    result = cli("backfill", sample_tree, "--dsn", dsn, "--owner", "analyst@example.org")

    assert result.exit_code == 0, result.output
    assert "job_input_files 1" in result.stdout
    assert "11 jobs given analyst@example.org" in result.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT job_id::text, filename, content_b64 FROM job_input_files")
        [(job_id, filename, content)] = rows.fetchall()
        assert (job_id, filename) == (JOB, "input.csv")
        on_disk = (sample_tree / "uploads" / JOB / "input.csv").read_bytes()
        assert base64.b64decode(content) == on_disk
        owners = conn.execute(
            "SELECT count(*) FROM jobs j JOIN users u ON u.id = j.user_id"
            " WHERE u.email = 'analyst@example.org'"
        ).fetchone()
        assert owners == (11,)
        # the dashboard hands one job to someone else: not a change of comsa-migrate's rows
        conn.execute(
            "UPDATE jobs SET user_id = (SELECT id FROM users WHERE role = 'user' LIMIT 1),"
            " status = status WHERE id = %s",
            [JOB],
        )
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('b@example.org', 'x')")
        conn.execute(
            "UPDATE jobs SET user_id = (SELECT id FROM users WHERE email = 'b@example.org')"
            " WHERE id = %s",
            [JOB],
        )

    report = cli("report", sample_tree, "--dsn", dsn, "--format", "json")
    summary = json.loads(report.stdout)["summary"]
    assert summary["jobs"]["by_action"]["unchanged"] == 11
    assert "db_changed" not in summary["problems"]["by_code"]
    rerun = cli("backfill", sample_tree, "--dsn", dsn, "--owner", "analyst@example.org")
    assert "0 inserted, 0 updated, 11 unchanged" in rerun.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        kept = conn.execute(
            "SELECT u.email FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id = %s", [JOB]
        ).fetchone()
        assert kept == ("b@example.org",)


def test_the_daemon_fills_uploads_and_owners_too(
    fresh_dashboard_dsn: str, sample_tree: Path, cli: Any
) -> None:
    dsn = fresh_dashboard_dsn
    with running_daemon(dsn, sample_tree, owner="analyst@example.org") as daemon:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert table_counts(conn)["jobs"] == 11
            assert conn.execute("SELECT count(*) FROM job_input_files").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM jobs WHERE user_id IS NULL").fetchone() == (
                0,
            )
            conn.execute("INSERT INTO users (email, password_hash) VALUES ('b@example.org', 'x')")
            conn.execute(
                "UPDATE jobs SET user_id = (SELECT id FROM users WHERE email = 'b@example.org')"
            )
        # a new upload of a job reaches job_input_files at its next sync
        (sample_tree / "uploads" / JOB / "input.csv").write_bytes(b"cause,n\nMalaria,3\n")
        wait_until(
            lambda: (
                psycopg.connect(dsn, autocommit=True)
                .execute("SELECT content_b64 FROM job_input_files WHERE job_id = %s", [JOB])
                .fetchone()
                == (base64.b64encode(b"cause,n\nMalaria,3\n").decode(),)
            ),
            what="the new upload in job_input_files",
        )
        assert daemon.stats().get("conflict", 0) == 0

    report = cli("report", sample_tree, "--dsn", dsn, "--format", "json")
    assert json.loads(report.stdout)["summary"]["jobs"]["by_action"]["unchanged"] == 11


def test_a_changed_or_removed_upload_updates_or_removes_its_row(
    cli: Any, fresh_dashboard_dsn: str, sample_tree: Path
) -> None:
    dsn = fresh_dashboard_dsn
    upload = sample_tree / "uploads" / JOB / "input.csv"
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0

    upload.write_bytes(b"cause,n\nHIV,1\n")
    report = cli("report", sample_tree, "--dsn", dsn, "--format", "json")
    rows = json.loads(report.stdout)["summary"]["rows"]["job_input_files"]
    assert rows == {"insert": 0, "update": 1, "delete": 0}
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        content = conn.execute("SELECT content_b64 FROM job_input_files").fetchone()
        assert content is not None and base64.b64decode(content[0]) == b"cause,n\nHIV,1\n"

    upload.unlink()
    result = cli("backfill", sample_tree, "--dsn", dsn)
    assert "1 updated" in result.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM job_input_files").fetchone() == (0,)


def test_uploads_over_the_limit_or_sharing_a_name_are_left_out_with_a_warning(
    cli: Any, fresh_dashboard_dsn: str, sample_tree: Path
) -> None:
    dsn = fresh_dashboard_dsn
    folder = sample_tree / "uploads" / JOB
    (folder / "deeper").mkdir()
    (folder / "deeper" / "input.csv").write_bytes(b"another,input\n")
    (folder / "big.csv").write_bytes(b"x" * 5000)

    result = cli("backfill", sample_tree, "--dsn", dsn, "--max-input-bytes", "4000")

    assert result.exit_code == 0, result.output
    assert "input_too_large 1" in result.stdout
    assert "duplicate_input_name 1" in result.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT filename, content_b64 FROM job_input_files").fetchall()
    assert [name for name, _ in rows] == ["input.csv"]
    assert base64.b64decode(rows[0][1]) == (folder / "input.csv").read_bytes()


def test_an_upload_over_the_limit_keeps_its_name_from_a_deeper_one(
    cli: Any, fresh_dashboard_dsn: str, sample_tree: Path
) -> None:
    folder = sample_tree / "uploads" / JOB
    (folder / "input.csv").write_bytes(b"x" * 5000)
    (folder / "deeper").mkdir()
    (folder / "deeper" / "input.csv").write_bytes(b"not the upload of that name\n")

    result = cli("backfill", sample_tree, "--dsn", fresh_dashboard_dsn, "--max-input-bytes", "4000")

    assert "input_too_large 1" in result.stdout
    assert "duplicate_input_name 1" in result.stdout
    with psycopg.connect(fresh_dashboard_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM job_input_files").fetchone() == (0,)


def test_no_input_content_leaves_job_input_files_alone(
    cli: Any, fresh_dashboard_dsn: str, sample_tree: Path
) -> None:
    result = cli("backfill", sample_tree, "--dsn", fresh_dashboard_dsn, "--no-input-content")

    assert result.exit_code == 0, result.output
    assert "job_input_files" not in result.stdout
    with psycopg.connect(fresh_dashboard_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM job_input_files").fetchone() == (0,)


def test_init_db_input_files_creates_the_dashboards_table_before_its_first_start(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    init = cli("init-db", "--dsn", empty_dsn, "--input-files")
    assert init.exit_code == 0, init.output
    assert "created job_input_files" in init.stdout
    again = cli("init-db", "--dsn", empty_dsn, "--input-files")
    assert "job_input_files exists" in again.stdout

    result = cli("backfill", sample_tree, "--dsn", empty_dsn)
    assert "job_input_files 1" in result.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        # the dashboard's own start-up statement finds the table as it would have made it
        conn.execute((DASHBOARD_SCHEMA / "003_input_file_storage.sql").read_text().encode())
        conn.execute(
            "INSERT INTO job_input_files (job_id, filename, content_b64) VALUES (%s, 'x', 'eA==')"
            " ON CONFLICT (job_id, filename) DO UPDATE SET content_b64 = EXCLUDED.content_b64",
            [JOB],
        )


def test_a_table_created_after_the_backfill_is_filled_by_the_next_one(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    age_tree(sample_tree)  # no fingerprint is racy: the rerun decides from stat alone
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0
    assert "11 unchanged" in cli("backfill", sample_tree, "--dsn", dsn).stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((DASHBOARD_SCHEMA / "003_input_file_storage.sql").read_text().encode())

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert "0 inserted, 1 updated, 10 unchanged" in result.stdout, result.output
    assert "job_input_files 1" in result.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (None, "--owner needs the dashboard's users table"),
        ("002_users.sql", "--owner nobody@example.org: no user with this e-mail in users"),
    ],
)
def test_an_owner_that_cannot_be_found_stops_before_anything_is_written(
    cli: Any, dsn: str, sample_tree: Path, setup: str | None, message: str
) -> None:
    if setup is not None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((DASHBOARD_SCHEMA / setup).read_text().encode())

    result = cli("backfill", sample_tree, "--dsn", dsn, "--owner", "nobody@example.org")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"comsa-migrate: error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn)["jobs"] == 0
        assert conn.execute("SELECT count(*) FROM comsa_migrate.runs").fetchone() == (0,)


def test_a_database_migrated_by_the_previous_release_is_brought_up_to_date_without_conflicts(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "upgrade" / "comsa-migrate-0.1.0.sql").read_text().encode())
    with psycopg.connect(empty_dsn, autocommit=True) as conn:  # the dump emptied search_path
        old_paths = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [JOB]).fetchone()
        assert old_paths == (f"uploads/{JOB}/input.csv",)

    result = cli("backfill", sample_tree, "--dsn", empty_dsn)

    assert result.exit_code == 0, result.output
    applied = "applied 004_one_writer_per_job.sql, 005_dashboard_as_client.sql, 006_daemon_lease"
    assert applied in " ".join(result.stdout.split())
    assert "0 inserted, 11 updated, 0 unchanged, 0 skipped, 0 conflicts" in result.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        path = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [JOB]).fetchone()
        assert path == (f"data/uploads/{JOB}/input.csv",)
        assert lines_by_time(conn) == legacy_lines(sample_tree)
        # the owner the dashboard gave a job under the previous release is kept
        owner = conn.execute(
            "SELECT u.email FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id = %s",
            [OWNED_BY_THE_DASHBOARD],
        ).fetchone()
        assert owner == ("analyst@example.org",)
    assert "11 unchanged" in cli("backfill", sample_tree, "--dsn", empty_dsn).stdout
