"""The spec's six "Common Queries" give meaningful answers on a migrated legacy tree.

They only read: they share one backfill of the sample tree (``sample_db``)."""

from __future__ import annotations

from typing import Any

import psycopg

FAILED = {"a817efa9-c5e7-4731-a6ee-ff6d9228f310", "85416700-d8f9-46d4-8f3f-ca9546389325"}
JOB = "ef3bd2ad-ce16-45fc-bc09-6be28646ecbf"  # vacalibration with an upload and an output


def test_list_recent_jobs_gives_durations(sample_db: psycopg.Connection[Any]) -> None:
    rows = sample_db.execute(
        "SELECT id, type, status, algorithm, country, created_at,"
        " completed_at - started_at AS duration FROM jobs ORDER BY created_at DESC LIMIT 20"
    ).fetchall()
    assert len(rows) == 11
    assert str(rows[0][0]) == JOB
    assert str(rows[0][6]) == "0:00:01"


def test_job_details_with_logs_in_order(sample_db: psycopg.Connection[Any]) -> None:
    row = sample_db.execute(
        "SELECT j.*, json_agg(json_build_object('timestamp', l.timestamp, 'message', l.message)"
        " ORDER BY l.timestamp) AS logs FROM jobs j LEFT JOIN job_logs l ON j.id = l.job_id"
        " WHERE j.id = %s GROUP BY j.id",
        [JOB],
    ).fetchone()
    assert row is not None
    logs = row[-1]
    assert len(logs) == 9
    assert logs[0] == {
        "timestamp": "2026-01-01T20:07:34",
        "message": "[2026-01-01 20:07:34] Starting vacalibration",
    }


def test_job_with_files_gives_types_paths_and_sizes(sample_db: psycopg.Connection[Any]) -> None:
    row = sample_db.execute(
        "SELECT j.id, j.status, j.algorithm, json_agg(json_build_object('type', f.file_type,"
        " 'name', f.file_name, 'path', f.file_path, 'size', f.file_size)) AS files"
        " FROM jobs j LEFT JOIN job_files f ON j.id = f.job_id WHERE j.id = %s GROUP BY j.id",
        [JOB],
    ).fetchone()
    assert row is not None
    files = sorted(row[3], key=lambda f: f["type"])
    assert [(f["type"], f["name"]) for f in files] == [
        ("input", "input.csv"),
        ("output", "calibration_summary.csv"),
    ]
    assert files[0]["path"] == f"data/uploads/{JOB}/input.csv"
    assert all(f["size"] > 0 for f in files)


def test_count_jobs_by_status(sample_db: psycopg.Connection[Any]) -> None:
    rows = sample_db.execute(
        "SELECT status, COUNT(*) AS count FROM jobs GROUP BY status ORDER BY count DESC"
    ).fetchall()
    assert rows == [("completed", 9), ("failed", 2)]


def test_jobs_by_algorithm_and_country_with_average_duration(
    sample_db: psycopg.Connection[Any],
) -> None:
    rows = sample_db.execute(
        "SELECT algorithm, country, COUNT(*) AS job_count,"
        " AVG(EXTRACT(EPOCH FROM (completed_at - started_at))) AS avg_duration_seconds"
        " FROM jobs WHERE status = 'completed' GROUP BY algorithm, country"
        " ORDER BY job_count DESC"
    ).fetchall()
    assert len(rows) == 1
    algorithm, country, count, avg_seconds = rows[0]
    assert (algorithm, country, count) == ("InterVA", "Mozambique", 9)
    assert 1 < float(avg_seconds) < 30


def test_recent_failed_jobs_show_the_error_message(sample_db: psycopg.Connection[Any]) -> None:
    rows = sample_db.execute(
        "SELECT id, algorithm, country, created_at, error->>'message' AS error_message"
        " FROM jobs WHERE status = 'failed' ORDER BY created_at DESC LIMIT 10"
    ).fetchall()
    assert {str(r[0]) for r in rows} == FAILED
    assert {r[4] for r in rows} == {"cannot open the connection"}
