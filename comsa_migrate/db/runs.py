"""The record of each run in comsa_migrate.runs: what ran, on which folder, how it ended."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = ["finish_run", "start_run"]


def start_run(conn: psycopg.Connection[Any], command: str, data_dir: str) -> int:
    row = conn.execute(
        "INSERT INTO comsa_migrate.runs (command, data_dir) VALUES (%s, %s) RETURNING id",
        [command, data_dir],
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_run(
    conn: psycopg.Connection[Any], run_id: int, outcome: str, totals: dict[str, Any]
) -> None:
    conn.execute(
        "UPDATE comsa_migrate.runs SET finished_at = now(), outcome = %s, totals = %s"
        " WHERE id = %s",
        [outcome, Jsonb(totals), run_id],
    )
