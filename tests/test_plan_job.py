"""comsa_migrate.plan_job(), the one never-clobber rule, called on its own: its decision for
each state a job's rows can be in, and the report's shortcut for a job with no row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest

from comsa_migrate.db.plans import insert_plan, plan_batch
from comsa_migrate.db.writes import apply_batch

JOB = "00000000-0000-4000-8000-0000000000aa"
LOG = ["2025-01-01T00:00:01", "started"]
FILE = ["output", "causes.csv", "data/outputs/x/causes.csv", 10, "2025-01-01T00:00:02"]


def payload(**fields: Any) -> bytes:
    job = {
        "id": JOB,
        "type": "pipeline",
        "status": "completed",
        "created_at": "2025-01-01T00:00:00",
        "error": {},
        "result": {},
        "logs": [LOG],
        "files": [FILE],
        "fingerprint": "f",
        "source_path": f"jobs/{JOB}.json",
        **fields,
    }
    return orjson.dumps(job)


def written(conn: psycopg.Connection[Any]) -> None:
    """The job as comsa-migrate wrote it."""
    [outcome] = apply_batch(conn, [payload()], force=False, run_id=None)
    assert outcome.action == "insert"


def changed_by_the_dashboard(conn: psycopg.Connection[Any]) -> None:
    written(conn)
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [JOB])


def written_by_the_dashboard(conn: psycopg.Connection[Any]) -> None:
    """A row comsa-migrate never wrote: no bookkeeping of it."""
    written(conn)
    conn.execute("DELETE FROM comsa_migrate.job_state WHERE job_id = %s", [JOB])


def nothing(conn: psycopg.Connection[Any]) -> None:
    pass


#: (the rows before, the job planned, --force, what plan_job() decides)
DECISIONS: list[tuple[Callable[[psycopg.Connection[Any]], None], bytes, bool, str]] = [
    (nothing, payload(), False, "insert"),
    (nothing, payload(), True, "insert"),
    (written, payload(), False, "unchanged"),
    (written, payload(), True, "unchanged"),
    (written, payload(status="failed"), False, "update"),
    (written, payload(logs=[]), False, "update"),
    (written, payload(files=[]), False, "update"),
    (written, payload(fingerprint="another stat"), False, "unchanged"),
    (changed_by_the_dashboard, payload(), False, "conflict"),
    (changed_by_the_dashboard, payload(), True, "update"),
    (changed_by_the_dashboard, payload(status="failed"), False, "unchanged"),
    (written_by_the_dashboard, payload(status="running"), False, "conflict"),
    (written_by_the_dashboard, payload(status="running"), True, "update"),
    (written_by_the_dashboard, payload(), False, "unchanged"),
]


@pytest.mark.parametrize(
    ("before", "job", "force", "action"),
    DECISIONS,
    ids=[
        f"{b.__name__}-{i}-{'force' if f else 'plain'}" for i, (b, _, f, _) in enumerate(DECISIONS)
    ],
)
def test_plan_job_decides_by_the_rows_stored_and_who_wrote_them(
    conn: psycopg.Connection[Any],
    before: Callable[[psycopg.Connection[Any]], None],
    job: bytes,
    force: bool,
    action: str,
) -> None:
    before(conn)

    row = conn.execute(
        "SELECT action FROM comsa_migrate.plan_job(%s::jsonb, %s)", [job.decode(), force]
    ).fetchone()

    assert row == (action,)


def test_the_reports_plan_of_a_job_with_no_row_is_the_servers(
    conn: psycopg.Connection[Any],
) -> None:
    """The report plans a job with no `jobs` row without asking the server: every row of
    it inserted. The server's plan of the same job says the same."""
    job = payload(logs=[LOG, LOG], files=[FILE])

    [planned] = plan_batch(conn, [job], force=False)

    assert planned == insert_plan(job)
