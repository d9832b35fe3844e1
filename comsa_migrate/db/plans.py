"""What writing jobs would do, asked of the database without writing: the report's plans."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from comsa_migrate.core.plan import Plan
from comsa_migrate.errors import first_line

__all__ = ["plan_batch"]

log = logging.getLogger(__name__)


# apply_job() rewrites a part (the job row, its logs, its files) only when it differs;
# logs and files are replaced whole: every stored row deleted, every incoming row inserted.
_PLAN_BATCH = """
SELECT p.action,
       p.stored IS NULL,
       p.action IN ('insert', 'update')
           AND (p.stored IS NULL OR p.stored->'job' <> p.incoming->'job'),
       p.action IN ('insert', 'update')
           AND (p.stored IS NULL OR p.stored->'logs' <> p.incoming->'logs'),
       p.action IN ('insert', 'update')
           AND (p.stored IS NULL OR p.stored->'files' <> p.incoming->'files'),
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
    WHERE p.action IN ('insert', 'update') AND p.incoming ? 'inputs'
) AS inputs
ORDER BY e.n
"""


def plan_batch(
    conn: psycopg.Connection[Any], payloads: Sequence[bytes], *, force: bool
) -> list[Plan]:
    """What apply_batch() would do with these jobs, read-only, in one round trip.

    A job the database cannot even plan (a value its row type refuses) is an "error",
    as apply_batch() would report it; the others are planned one by one around it.
    """
    try:
        with conn.transaction():
            return _plan_rows(conn, payloads, force)
    except psycopg.DataError:
        log.info("a job of this batch cannot be planned; planning the batch job by job")
    plans: list[Plan] = []
    for payload in payloads:
        try:
            with conn.transaction():
                plans.extend(_plan_rows(conn, [payload], force))
        except psycopg.DataError as exc:
            plans.append(Plan("error", {}, first_line(exc)))
    return plans


def _plan_rows(conn: psycopg.Connection[Any], payloads: Sequence[bytes], force: bool) -> list[Plan]:
    batch = b"[" + b",".join(payloads) + b"]"
    rows = conn.execute(_PLAN_BATCH, [batch.decode(), force]).fetchall()
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
