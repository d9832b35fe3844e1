"""Writing a batch of jobs: each job in a transaction of its own, the batch in one round trip.

Each job's transaction is ``BEGIN ISOLATION LEVEL READ COMMITTED``, the tool's own limits
with ``set_config(..., true)``, ``comsa_migrate.apply_job_outcome()``, ``COMMIT``: the
limits, and ``synchronous_commit = off``, hold for that transaction only, whatever the
role's defaults, and nothing outlives it, so a pooler (PgBouncer in transaction mode)
hands its next client the session as it was. The statements are sent in libpq's
pipeline mode, unnamed (no prepared statement outlives a transaction), with one sync
point for the batch. libpq is used directly: through psycopg's cursors the four
statements of a job cost more time on the client than the job costs the server (see
db/libpq_io.py for how it waits).

Without waiting for the WAL flush, a server crash may lose the last few commits, and
their bookkeeping with them, so a rerun redoes exactly those jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import pq

from comsa_migrate.db.faults import Limits
from comsa_migrate.db.libpq_io import (
    error_of,
    leave_pipeline,
    lost,
    next_result,
    send_all,
    send_some,
)

__all__ = ["BatchFault", "write_batch"]

_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"
_LIMITS = (
    b"SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),"
    b" set_config('idle_in_transaction_session_timeout', '0', true),"
    b" set_config('synchronous_commit', 'off', true)"
)
#: the job as text: its cast to jsonb is guarded with the rest of its write
_APPLY = b"SELECT comsa_migrate.apply_job_outcome($1, $2::boolean, $3::bigint)"
_COMMIT = b"COMMIT"
#: the statements sent for each job, in order: the outcome is the answer to the third,
#: and it holds once the fourth, the COMMIT, has succeeded
_PER_JOB = 4
_OUTCOME = 2
_COMMITTED = 3


@dataclass
class BatchFault(Exception):
    """The batch could not be written whole: a statement outside a job's own guard failed,
    or the connection did. ``outcomes`` holds the committed jobs' answers (None for the
    others); ``failed_at`` is the job whose statement failed first, if one did (the jobs
    after it in the batch were not written); ``unknown`` says whether some job's COMMIT
    may have happened without its answer arriving."""

    outcomes: list[dict[str, Any] | None]
    sqlstate: str | None
    message: str
    failed_at: int | None
    unknown: bool

    def __str__(self) -> str:
        return self.message


def write_batch(
    conn: psycopg.Connection[Any],
    payloads: Sequence[bytes],
    *,
    force: bool,
    run_id: int | None,
    limits: Limits,
) -> list[dict[str, Any]]:
    """Write each payload (a job as apply_job() reads it) in a transaction of its own, and
    return apply_job_outcome()'s answer for each, in order.

    Raises BatchFault when not every job's answer and COMMIT came back.
    """
    limits_args = [limits.statement_timeout.encode(), limits.lock_timeout.encode()]
    tail = [b"t" if force else b"f", None if run_id is None else str(run_id).encode()]
    read = _Answers(len(payloads))
    with conn.lock:
        pgconn = conn.pgconn
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            raise RuntimeError("write_batch() needs an idle connection, outside a transaction")
        pgconn.enter_pipeline_mode()
        sync_sent = False
        try:
            for payload in payloads:
                pgconn.send_query_params(_BEGIN, None)
                pgconn.send_query_params(_LIMITS, limits_args)
                pgconn.send_query_params(_APPLY, [payload, *tail])
                pgconn.send_query_params(_COMMIT, None)
                send_some(pgconn)
            pgconn.pipeline_sync()
            sync_sent = True
            send_all(pgconn)
            read.all(pgconn)
        except psycopg.Error as exc:  # the connection failed while sending or reading
            read.connection_failed(exc.sqlstate, str(exc).strip().splitlines()[0])
        finally:
            leave_pipeline(pgconn, len(payloads) * _PER_JOB - read.statements, sync_sent=sync_sent)
    if read.failure is not None:
        raise BatchFault(read.outcomes, *read.failure, read.failed_at, read.unknown)
    return [outcome for outcome in read.outcomes if outcome is not None]


class _Answers:
    """The answers of one batch as they arrive: each job's outcome once its COMMIT is."""

    def __init__(self, jobs: int) -> None:
        self.outcomes: list[dict[str, Any] | None] = [None] * jobs
        self.statements = 0  # answers read so far
        self.failure: tuple[str | None, str] | None = None
        self.failed_at: int | None = None
        self.unknown = False
        self._answer: dict[str, Any] | None = None

    def all(self, pgconn: pq.abc.PGconn) -> None:
        for statement in range(len(self.outcomes) * _PER_JOB):
            result = next_result(pgconn)
            if result is None:
                self.connection_failed(None, lost(pgconn))
                return
            self._take(statement, result)
            self.statements += 1
            next_result(pgconn)  # the None that ends each statement's answers
        sync = next_result(pgconn)
        if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
            self.connection_failed(None, lost(pgconn))

    def connection_failed(self, sqlstate: str | None, message: str) -> None:
        """The connection failed: a job whose COMMIT was sent but not answered may or may
        not be written."""
        self.failure = self.failure or (sqlstate, message)
        if self.statements < len(self.outcomes) * _PER_JOB:
            self.unknown = True

    def _take(self, statement: int, result: pq.abc.PGresult) -> None:
        job, step = divmod(statement, _PER_JOB)
        if result.status == pq.ExecStatus.FATAL_ERROR and self.failure is None:
            self.failure = error_of(result)
            self.failed_at = job
        elif step == _OUTCOME and result.status == pq.ExecStatus.TUPLES_OK:
            value = result.get_value(0, 0)
            self._answer = None if value is None else orjson.loads(value)
        elif step == _COMMITTED:
            if result.status == pq.ExecStatus.COMMAND_OK:
                self.outcomes[job] = self._answer
            self._answer = None
