"""PostgreSQL side of a migration: job payloads, fingerprints, batched writes and run records."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from comsa_migrate.core.jsondump import dumps as _dumps
from comsa_migrate.core.layout import utc_from_ns
from comsa_migrate.core.normalise import JobRecord
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES, InputEntry
from comsa_migrate.db.faults import (
    DEFAULT_LIMITS,
    Limits,
    describe_fault,
    describe_refusal,
    is_run_fault,
    set_limits,
)
from comsa_migrate.db.fingerprints import RECORDED, Answer
from comsa_migrate.db.job_writes import BatchFault, StagedUpload, write_batch
from comsa_migrate.errors import ConfigurationError, first_line

__all__ = [
    "Answer",
    "BatchStopped",
    "Outcome",
    "Plan",
    "WriteSettings",
    "apply_batch",
    "give_owner",
    "job_payload",
    "owner_of",
    "plan_batch",
    "recorded_fingerprints",
    "write_settings",
]

log = logging.getLogger(__name__)

TABLES = ("jobs", "job_logs", "job_files", "job_input_files")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the database did with one job."""

    action: str  # insert, update, unchanged, conflict or error
    rows: dict[str, int]  # rows written per table, and "owned": jobs given their owner
    message: str | None = None  # the database's reason, for "error"


@dataclass(frozen=True, slots=True)
class WriteSettings:
    """How jobs are written to this database: what the options ask and what it has."""

    path_prefix: str = "data/"  # DATA_DIR as the dashboard's working folder sees it
    store_inputs: bool = False  # copy uploads into job_input_files (which exists)
    max_input_bytes: int = 0
    owner_id: str | None = None  # users.id given to migrated jobs that have no owner
    inline_input_bytes: int = DEFAULT_INLINE_INPUT_BYTES  # larger uploads are streamed
    file_store: str | None = None  # --file-store: where the files' contents are kept

    @property
    def tag(self) -> str:
        """What a job's stored fingerprint adds to the stat fingerprint: a change of these
        settings (another prefix, job_input_files created, a file store) reads every job again."""
        inputs = f"inputs<={self.max_input_bytes}" if self.store_inputs else "no-inputs"
        return f"{self.path_prefix}|{inputs}" + (f"|{self.file_store}" if self.file_store else "")

    def fingerprint(self, source_fingerprint: str) -> str:
        return f"{source_fingerprint}|{self.tag}"


def write_settings(
    conn: psycopg.Connection[Any] | None,
    path_prefix: str,
    *,
    input_content: bool,
    max_input_bytes: int,
    owner: str | None,
    inline_input_bytes: int = DEFAULT_INLINE_INPUT_BYTES,
    file_store: str | None = None,
) -> WriteSettings:
    """The settings of a run on ``conn`` (None: no database, as a report offline has it).

    Raises ConfigurationError when --owner names no user of the dashboard's `users`.
    """
    has_inputs = conn is not None and _exists(conn, "public.job_input_files")
    owner_id = None if owner is None or conn is None else owner_of(conn, owner)
    store_inputs = input_content and has_inputs
    return WriteSettings(
        path_prefix, store_inputs, max_input_bytes, owner_id, inline_input_bytes, file_store
    )


def owner_of(conn: psycopg.Connection[Any], email: str) -> str:
    """The id of the dashboard user with this e-mail (case aside), for --owner."""
    has_owner_column = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('public.jobs')"
        " AND attname = 'user_id' AND NOT attisdropped"
    ).fetchone()
    if not _exists(conn, "public.users") or not has_owner_column:
        raise ConfigurationError(
            "--owner needs the dashboard's users table and jobs.user_id (its migration "
            "002_users), which this database does not have"
        )
    rows = conn.execute(
        "SELECT id::text FROM public.users WHERE lower(email) = lower(%s)", [email]
    ).fetchall()
    if len(rows) != 1:
        found = "no user" if not rows else f"{len(rows)} users"
        raise ConfigurationError(f"--owner {email}: {found} with this e-mail in users")
    return str(rows[0][0])


def give_owner(conn: psycopg.Connection[Any], owner_id: str, limits: Limits) -> int:
    """Give every job comsa-migrate wrote and nobody owns the owner; returns how many.

    Jobs written in this run get it in their own transaction (apply_job); this reaches
    the ones a rerun skips as unchanged by stat.
    """
    with conn.transaction():
        set_limits(conn, limits)
        cur = conn.execute(
            "UPDATE public.jobs j SET user_id = %s FROM comsa_migrate.job_state s"
            " WHERE s.job_id = j.id AND j.user_id IS NULL",
            [owner_id],
        )
    return cur.rowcount


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


def job_payload(
    record: JobRecord, settings: WriteSettings, inputs: Sequence[InputEntry] | None = None
) -> bytes:
    """The job as one JSON document, the shape comsa_migrate.apply_job() reads.

    Paths are DATA_DIR-relative in the record; the payload gives them as the dashboard
    writes them, under ``settings.path_prefix``. ``inputs`` are the job's uploads for
    job_input_files, when it is written (Inputs.entries).
    """
    prefix = settings.path_prefix
    payload: dict[str, Any] = {
        "id": record.id,
        "type": record.type,
        "status": record.status,
        "algorithm": record.algorithm,
        "age_group": record.age_group,
        "country": record.country,
        "calib_model_type": record.calib_model_type,
        "ensemble": record.ensemble,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
        "error": record.error,
        "result": record.result,
        "input_file_path": (
            None if record.input_file_path is None else prefix + record.input_file_path
        ),
        "logs": record.logs,  # LogEntry tuples: _dumps() writes each as an array
        "files": [
            (f.file_type, f.file_name, prefix + f.file_path, f.size, utc_from_ns(f.mtime_ns))
            for f in record.source.files
        ],
        "fingerprint": settings.fingerprint(record.source.fingerprint),
        "source_path": record.source.json_path,
    }
    if settings.store_inputs and inputs is not None:
        payload["inputs"] = inputs
    if settings.owner_id is not None:
        payload["owner_id"] = settings.owner_id
    return _dumps(payload)


def recorded_fingerprints(
    conn: psycopg.Connection[Any], job_ids: Sequence[str], limits: Limits
) -> Answer:
    """The fingerprints recorded for these jobs whose `jobs` row is still there, read now;
    the function returned gives them, {job id: fingerprint}."""
    with conn.transaction():
        set_limits(conn, limits)
        rows = conn.execute(
            RECORDED.format(ids="%s"),
            ["{" + ",".join(job_ids) + "}"],  # job ids are UUIDs: nothing to quote
        ).fetchall()
    found = dict(rows)
    return lambda: found


class BatchStopped(Exception):
    """A batch's write stopped on a fault of the run (see db/faults.py).

    ``outcomes`` are aligned with the batch: each job's outcome, or None for a job not
    written (the fault met it, or came before it). ``counted`` is False when some jobs'
    answers never came: whether they were committed is not known.
    """

    def __init__(
        self,
        outcomes: list[Outcome | None],
        sqlstate: str | None,
        message: str,
        *,
        counted: bool,
        limits: Limits,
    ) -> None:
        #: one line that names the cause: "the database is out of disk space: ..."
        self.cause = describe_fault(sqlstate, message, limits)
        super().__init__(self.cause)
        self.outcomes = outcomes
        self.sqlstate = sqlstate
        self.message = message
        self.counted = counted


def apply_batch(
    conn: psycopg.Connection[Any],
    payloads: Sequence[bytes | None],
    uploads: Sequence[Sequence[StagedUpload]] = (),
    *,
    force: bool,
    run_id: int | None,
    limits: Limits = DEFAULT_LIMITS,
    stored: Sequence[bytes | None] = (),
) -> list[Outcome]:
    """Write a batch of jobs in one round trip, each job in its own transaction, with the
    uploads each one streams and its record of stored files (aligned with ``payloads``).

    A job refused outside its write's own guard (its statement cancelled at its COMMIT,
    say) is that job's error, and the jobs after it are sent again. Raises BatchStopped
    on a fault of the run: the jobs written before and after it in the batch are in its
    outcomes.
    """
    answers: list[dict[str, Any] | None] = []
    rest, rest_uploads, rest_stored = list(payloads), list(uploads), list(stored)
    while rest:
        try:
            answers += write_batch(
                conn, rest, force=force, run_id=run_id, limits=limits, uploads=rest_uploads,
                stored=rest_stored,
            )  # fmt: skip
            rest = []
        except BatchFault as fault:
            refused = fault.failed_at
            if refused is None or fault.unknown or is_run_fault(fault.sqlstate) or conn.broken:
                told = [None if a is None else _outcome(a, limits) for a in answers]
                told += [None if a is None else _outcome(a, limits) for a in fault.outcomes]
                raise BatchStopped(
                    _written(told),
                    fault.sqlstate,
                    fault.message,
                    counted=not fault.unknown,
                    limits=limits,
                ) from None
            refusal = {"action": "error", "message": fault.message, "sqlstate": fault.sqlstate}
            answers += [*fault.outcomes[:refused], refusal]
            rest, rest_uploads = rest[refused + 1 :], rest_uploads[refused + 1 :]
            rest_stored = rest_stored[refused + 1 :]
    outcomes = [_outcome(answer, limits) for answer in answers if answer is not None]
    stop = next((answer for answer in answers if answer and answer["action"] == "stopped"), None)
    if stop is not None:
        raise BatchStopped(
            _written(outcomes), stop.get("sqlstate"), stop["message"], counted=True, limits=limits
        )
    return outcomes


def _outcome(answer: dict[str, Any], limits: Limits) -> Outcome:
    message = answer.get("message")
    return Outcome(
        answer["action"],
        {key: int(answer.get(key, 0)) for key in (*TABLES, "owned", "stored_files")},
        None if message is None else describe_refusal(answer.get("sqlstate"), message, limits),
    )


def _written(outcomes: Sequence[Outcome | None]) -> list[Outcome | None]:
    """The outcomes, with None for the jobs a fault stopped."""
    return [None if o is None or o.action == "stopped" else o for o in outcomes]


@dataclass(frozen=True, slots=True)
class Plan:
    """What writing one job would do, decided by comsa_migrate.plan_job() without writing."""

    action: str  # insert, update, unchanged, conflict or error
    changes: dict[str, tuple[int, int, int]]  # per table: rows inserted, updated, deleted
    message: str | None = None  # the database's reason, for "error"

    @property
    def outcome(self) -> Outcome:
        """The outcome apply_batch() would return: rows written are inserted plus updated."""
        rows = {table: ins + upd for table, (ins, upd, _) in self.changes.items()}
        return Outcome(self.action, rows, self.message)


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
