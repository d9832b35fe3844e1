"""A batch's write, a transaction per job: what one job's refusal does to the others, and
that the server function and the client take the same errors for faults of the run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import psycopg

from comsa_migrate.db.faults import RUN_FAULT_CLASSES
from comsa_migrate.db.writes import apply_batch

SCHEMA = Path(__file__).resolve().parent.parent / "schema"
FIRST, SECOND, THIRD = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


def payload(job_id: str, **fields: Any) -> bytes:
    job = {
        "id": job_id,
        "type": "pipeline",
        "status": "completed",
        "created_at": "2025-01-01T00:00:00",
        "error": {},
        "result": {},
        "logs": [],
        "files": [],
        "fingerprint": "f",
        "source_path": f"jobs/{job_id}.json",
        **fields,
    }
    return orjson.dumps(job)


def job_ids(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id::text FROM jobs ORDER BY id").fetchall()]


def test_a_job_whose_json_the_server_cannot_take_is_that_jobs_error_alone(
    conn: psycopg.Connection[Any],
) -> None:
    """A lone surrogate escape is valid to orjson and refused by jsonb."""
    bad = payload(SECOND).replace(b'"pipeline"', b'"pipe\\ud800line"')

    outcomes = apply_batch(conn, [payload(FIRST), bad, payload(THIRD)], force=False, run_id=None)

    assert [o.action for o in outcomes] == ["insert", "error", "insert"]
    assert outcomes[1].message and "json" in outcomes[1].message.lower()
    assert job_ids(conn) == [FIRST, THIRD]


def test_a_job_refused_at_its_commit_is_its_error_and_the_jobs_after_it_are_written(
    conn: psycopg.Connection[Any],
) -> None:
    """A deferred constraint trigger refuses the second job only when it commits: outside
    the guard of its write, so the rest of the batch is sent again."""
    conn.execute(
        "CREATE FUNCTION refuse_second() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.id = '{SECOND}' THEN RAISE EXCEPTION 'refused at commit'; END IF;"
        " RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE CONSTRAINT TRIGGER refuse_second AFTER INSERT ON jobs"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_second()"
    )

    outcomes = apply_batch(
        conn, [payload(FIRST), payload(SECOND), payload(THIRD)], force=False, run_id=None
    )

    assert [o.action for o in outcomes] == ["insert", "error", "insert"]
    assert outcomes[1].message == "refused at commit"
    assert job_ids(conn) == [FIRST, THIRD]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_the_server_function_stops_a_batch_on_the_classes_the_client_takes_for_faults() -> None:
    sql = (SCHEMA / "functions" / "40_apply_job.sql").read_text()
    match = re.search(r"left\(SQLSTATE, 2\) IN \(([^)]*)\)", sql)

    assert match is not None
    assert set(re.findall(r"'(\w\w)'", match.group(1))) == RUN_FAULT_CLASSES


def test_a_jobs_transaction_has_the_same_settings_whoever_sets_them() -> None:
    """apply_job_outcome() sets them, or, when the statement timeout must differ, a statement
    sent before it does (db/job_writes.py): the two lists are one list."""
    from comsa_migrate.db.job_writes import _LIMITS

    functions = (SCHEMA / "functions" / "40_apply_job.sql").read_text()
    outcome = functions[functions.index("FUNCTION comsa_migrate.apply_job_outcome(job text") :]
    in_the_apply = set(re.findall(r"set_config\('(\w+)'", outcome[: outcome.index("END IF;")]))
    sent_before = set(re.findall(r"set_config\('(\w+)'", _LIMITS.decode()))

    assert "enable_seqscan" in in_the_apply
    assert sent_before == in_the_apply | {"statement_timeout"}
