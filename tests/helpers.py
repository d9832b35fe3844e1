"""Small helpers the tests share: row counts and a digest that any write changes."""

from __future__ import annotations

from typing import Any

import psycopg


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        for table in ("jobs", "job_logs", "job_files")
    }


def row_digest(conn: psycopg.Connection[Any]) -> str:
    """One digest of every row, system columns included: any write changes it."""
    row = conn.execute(
        "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ("
        " SELECT xmin::text || ctid::text || j::text AS t FROM jobs j"
        " UNION ALL SELECT xmin::text || ctid::text || l::text FROM job_logs l"
        " UNION ALL SELECT xmin::text || ctid::text || f::text FROM job_files f) rows"
    ).fetchone()
    assert row is not None
    return str(row[0])
