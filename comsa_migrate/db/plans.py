"""What writing jobs would do, asked of the database without writing: the report's plans."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from comsa_migrate.core.plan import Plan
from comsa_migrate.errors import first_line

__all__ = ["insert_plan", "plan_batch"]

log = logging.getLogger(__name__)


# Whether a part of the job is rewritten is the rule of rewrites(), by which apply_job()
# writes; a database whose functions are older has no rewrites(), and every part counts.
_PLAN_BATCH = """
SELECT p.action,
       p.stored IS NULL,
       p.action IN ('insert', 'update') AND {job},
       p.action IN ('insert', 'update') AND {logs},
       p.action IN ('insert', 'update') AND {files},
       COALESCE(jsonb_array_length(p.stored->'logs'), 0),
       jsonb_array_length(p.incoming->'logs'),
       COALESCE(jsonb_array_length(p.stored->'files'), 0),
       jsonb_array_length(p.incoming->'files'),
       inputs.inserted, inputs.updated, inputs.deleted
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(job, n)
CROSS JOIN LATERAL comsa_migrate.plan_job(e.job, %s) AS p
CROSS JOIN LATERAL (
    -- job_input_files, by file name: [name, digest] on each side
    SELECT count(*) FILTER (WHERE s.v IS NULL) AS inserted,
           count(*) FILTER (WHERE s.v->>1 <> i.v->>1) AS updated,
           count(*) FILTER (WHERE i.v IS NULL) AS deleted
    FROM jsonb_array_elements(COALESCE(p.incoming->'inputs', '[]')) AS i(v)
    FULL JOIN jsonb_array_elements(COALESCE(p.stored->'inputs', '[]')) AS s(v)
        ON s.v->>0 = i.v->>0
    WHERE p.action IN ('insert', 'update') AND p.incoming ? 'inputs' AND {inputs}
) AS inputs
ORDER BY e.n
"""
_PARTS = ("job", "logs", "files", "inputs")
_EXACT = _PLAN_BATCH.format_map(
    {part: f"comsa_migrate.rewrites(p.stored, p.incoming, '{part}')" for part in _PARTS}
)
_UPPER_BOUND = _PLAN_BATCH.format_map(dict.fromkeys(_PARTS, "true"))


def plan_batch(
    conn: psycopg.Connection[Any], payloads: Sequence[bytes], *, force: bool, exact: bool = True
) -> list[Plan]:
    """What apply_batch() would do with these jobs, read-only, in one round trip.

    A job the database cannot even plan (a value its row type refuses) is an "error",
    as apply_batch() would report it; the others are planned one by one around it.
    Without ``exact`` (a database whose functions have no rewrites() yet) every part of
    an insert or an update counts as rewritten: an upper bound of the rows written.
    """
    query = (_EXACT if exact else _UPPER_BOUND).encode()
    try:
        with conn.transaction():
            return _plan_rows(conn, query, payloads, force)
    except psycopg.DataError:
        log.info("a job of this batch cannot be planned; planning the batch job by job")
    plans: list[Plan] = []
    for payload in payloads:
        try:
            with conn.transaction():
                plans.extend(_plan_rows(conn, query, [payload], force))
        except psycopg.DataError as exc:
            plans.append(Plan("error", {}, first_line(exc)))
    return plans


def insert_plan(payload: bytes) -> Plan:
    """What apply_batch() does with a job that has no rows yet, known without asking: by
    rewrites(), every part written (its row, every log line, every file, every upload it
    carries for job_input_files, which holds none of a job with no row)."""
    job = orjson.loads(payload)
    logs, files, inputs = len(job["logs"]), len(job["files"]), len(job.get("inputs", ()))
    return _plan("insert", True, True, True, True, 0, logs, 0, files, inputs, 0, 0)


def _plan_rows(
    conn: psycopg.Connection[Any], query: bytes, payloads: Sequence[bytes], force: bool
) -> list[Plan]:
    batch = b"[" + b",".join(payloads) + b"]"
    rows = conn.execute(query, [batch.decode(), force]).fetchall()
    return [_plan(*row) for row in rows]


def _plan(
    action: str,
    new: bool,
    job_changed: bool,
    logs_changed: bool,
    files_changed: bool,
    logs_before: int,
    logs_after: int,
    files_before: int,
    files_after: int,
    inputs_inserted: int,
    inputs_updated: int,
    inputs_deleted: int,
) -> Plan:
    return Plan(
        action,
        {
            "jobs": (int(job_changed and new), int(job_changed and not new), 0),
            "job_logs": (logs_after, 0, logs_before) if logs_changed else (0, 0, 0),
            "job_files": (files_after, 0, files_before) if files_changed else (0, 0, 0),
            "job_input_files": (inputs_inserted, inputs_updated, inputs_deleted),
        },
    )
