"""The data path's writes: the settings of a run on a database, batches of jobs applied, owners."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from comsa_migrate.core.payload import WriteSettings
from comsa_migrate.core.plan import Outcome
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES
from comsa_migrate.db.faults import (
    DEFAULT_LIMITS,
    Limits,
    describe_fault,
    describe_refusal,
    is_run_fault,
    set_limits,
)
from comsa_migrate.db.job_writes import BatchFault, StagedUpload, write_batch
from comsa_migrate.errors import ConfigurationError
from comsa_migrate.observer import TABLES

__all__ = [
    "BatchStopped",
    "apply_batch",
    "give_owner",
    "owner_of",
    "table_exists",
    "write_settings",
]

log = logging.getLogger(__name__)


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
    has_inputs = conn is not None and table_exists(conn, "public.job_input_files")
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
    if not table_exists(conn, "public.users") or not has_owner_column:
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


#: the jobs a run gives the --owner at its start: written by comsa-migrate, owned by nobody
OWNERLESS_JOBS = (
    "SELECT j.id FROM public.jobs j JOIN comsa_migrate.job_state s ON s.job_id = j.id"
    " WHERE j.user_id IS NULL"
)


def give_owner(conn: psycopg.Connection[Any], owner_id: str, limits: Limits) -> int:
    """Give every job comsa-migrate wrote and nobody owns the owner; returns how many.

    Jobs written in this run get it in their own transaction (apply_job); this reaches
    the ones a rerun skips as unchanged by stat.
    """
    with conn.transaction():
        set_limits(conn, limits)
        cur = conn.execute(
            f"UPDATE public.jobs SET user_id = %s WHERE id IN ({OWNERLESS_JOBS})",  # noqa: S608
            [owner_id],
        )
    return cur.rowcount


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    """Whether the table ``name`` (schema-qualified) is there."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


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
