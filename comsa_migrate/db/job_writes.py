"""Writing a batch of jobs: each job in a transaction of its own, the batch in one round trip.

Each job's transaction is ``BEGIN ISOLATION LEVEL READ COMMITTED``, the tool's own limits
with ``set_config(..., true)``, ``comsa_migrate.apply_job_outcome()``, ``COMMIT``: the
limits, and ``synchronous_commit = off``, hold for that transaction only, whatever the
role's defaults, and nothing outlives it, so a pooler (PgBouncer in transaction mode)
hands its next client the session as it was. The statements are sent in libpq's
pipeline mode, unnamed (no prepared statement outlives a transaction), with one sync
point for the batch. libpq is used directly: through psycopg's cursors the four
statements of a job cost more time on the client than the job costs the server. The
connection stays non-blocking, as psycopg keeps it: waits are select() calls, which let
the other threads run (a blocking libpq call would hold the interpreter lock).

Without waiting for the WAL flush, a server crash may lose the last few commits, and
their bookkeeping with them, so a rerun redoes exactly those jobs.

A job's large uploads are sent between its limits and its apply, one chunk of base64 a
statement, into comsa_migrate.upload_chunks (schema/007_upload_staging.sql); libpq's
buffer is emptied onto the socket after each chunk, so that the client holds one chunk
at a time whatever the upload's size.
"""

from __future__ import annotations

import itertools
import logging
import select
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import pq

from comsa_migrate.db.faults import Limits
from comsa_migrate.errors import first_line

__all__ = ["BatchFault", "StagedUpload", "write_batch"]

log = logging.getLogger(__name__)

_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"
_LIMITS = (
    b"SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),"
    b" set_config('idle_in_transaction_session_timeout', '0', true),"
    b" set_config('synchronous_commit', 'off', true)"
)
_STAGE = (
    b"INSERT INTO comsa_migrate.upload_chunks (job_id, filename, seq, chunk)"
    b" VALUES ($1::uuid, $2, $3::integer, $4)"
)
_APPLY = b"SELECT comsa_migrate.apply_job_outcome($1::jsonb, $2::boolean, $3::bigint)"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"
#: in the list of the statements sent: one that is not a job's apply
_NOT_APPLY = -1


class StagedUpload(Protocol):
    """An upload of a job sent apart from its payload, as base64 chunks whose joining is
    the upload's base64 (core/uploads.py)."""

    @property
    def job_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    def chunks(self) -> Iterable[bytes]: ...


class BatchFault(Exception):
    """The batch could not be read back whole: the connection failed, or a statement
    outside a job's own guard was refused. ``outcomes`` holds what was read (None for a
    job without an answer); ``sqlstate`` and ``message`` say what failed."""

    def __init__(self, outcomes: list[dict[str, Any] | None], sqlstate: str | None, message: str):
        super().__init__(message)
        self.outcomes = outcomes
        self.sqlstate = sqlstate
        self.message = message


def write_batch(
    conn: psycopg.Connection[Any],
    payloads: Sequence[bytes],
    *,
    force: bool,
    run_id: int | None,
    limits: Limits,
    uploads: Sequence[Sequence[StagedUpload]] = (),
) -> list[dict[str, Any]]:
    """Write each payload (a job as apply_job() reads it) in a transaction of its own, with
    its staged uploads (``uploads``, aligned with ``payloads``, or empty when no job has
    any), and return apply_job_outcome()'s answer for each, in order.

    Raises BatchFault when the answers cannot all be read.
    """
    limits_args = [limits.statement_timeout.encode(), limits.lock_timeout.encode()]
    tail = [b"t" if force else b"f", None if run_id is None else str(run_id).encode()]
    with conn.lock:
        pgconn = conn.pgconn
        pgconn.enter_pipeline_mode()
        outcomes: list[dict[str, Any] | None] = [None] * len(payloads)
        #: each statement sent: the position of the job whose apply it is, or _NOT_APPLY
        sent: list[int] = []
        try:
            for position, payload in enumerate(payloads):
                _send(pgconn, sent, _BEGIN, None)
                _send(pgconn, sent, _LIMITS, limits_args)
                for upload in uploads[position] if uploads else ():
                    _stage(pgconn, sent, upload)
                _send(pgconn, sent, _APPLY, [payload, *tail], applied=position)
                _send(pgconn, sent, _COMMIT, None)
                _send_some(pgconn)
            pgconn.pipeline_sync()
            _send_all(pgconn)
            failure = _read_answers(pgconn, sent, outcomes)
        except psycopg.Error as exc:  # the connection failed while sending or reading
            failure = (exc.sqlstate, first_line(exc))
        finally:
            _leave_pipeline(pgconn, len(sent))
    if failure is not None:
        raise BatchFault(outcomes, *failure)
    return [outcome for outcome in outcomes if outcome is not None]


def _send(
    pgconn: pq.abc.PGconn,
    sent: list[int],
    query: bytes,
    params: Sequence[bytes | None] | None,
    applied: int = _NOT_APPLY,
) -> None:
    pgconn.send_query_params(query, params)
    sent.append(applied)


def _stage(pgconn: pq.abc.PGconn, sent: list[int], upload: StagedUpload) -> None:
    """Send the upload's chunks, each one out of libpq's buffer before the next is read.

    A chunk that cannot be had (even through a bug) ends the upload there: the job's
    digest check then refuses the job, and the batch's statements stay whole.
    """
    key = [upload.job_id.encode(), upload.name.encode()]
    chunks = iter(upload.chunks())
    for seq in itertools.count():
        try:
            chunk = next(chunks, None)
        except Exception:
            log.exception("%s: %s: cannot read the upload to send it", upload.job_id, upload.name)
            chunk = None
        if chunk is None:
            return
        _send(pgconn, sent, _STAGE, [*key, str(seq).encode(), chunk])
        _send_all(pgconn)


def _send_some(pgconn: pq.abc.PGconn) -> None:
    """Send what libpq holds if the socket takes it now, and take in what came meanwhile,
    so that neither side's buffers fill up while a large batch is queued."""
    if pgconn.flush() and select.select([pgconn.socket], [], [], 0)[0]:
        pgconn.consume_input()


def _send_all(pgconn: pq.abc.PGconn) -> None:
    fd = pgconn.socket
    while pgconn.flush():
        readable, _, _ = select.select([fd], [fd], [])
        if readable:
            pgconn.consume_input()


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    fd = pgconn.socket
    while pgconn.is_busy():
        select.select([fd], [], [])
        pgconn.consume_input()
    return pgconn.get_result()


def _read_answers(
    pgconn: pq.abc.PGconn, sent: list[int], outcomes: list[dict[str, Any] | None]
) -> tuple[str | None, str] | None:
    """Fill in every job's outcome from the answers to the statements ``sent``; the first
    failure (SQLSTATE, message) if one came."""
    failure: tuple[str | None, str] | None = None
    for applied in sent:
        result = _next_result(pgconn)
        if result is None:
            return failure or (None, _connection_error(pgconn))
        status = result.status
        if status == pq.ExecStatus.FATAL_ERROR:
            if failure is None:
                state = result.error_field(pq.DiagnosticField.SQLSTATE)
                message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
                failure = (state.decode() if state else None, message.decode(errors="replace"))
            if pgconn.status != pq.ConnStatus.OK:
                return failure
        elif status == pq.ExecStatus.TUPLES_OK and applied != _NOT_APPLY:
            value = result.get_value(0, 0)
            outcomes[applied] = None if value is None else orjson.loads(value)
        _next_result(pgconn)  # the None that ends each statement's answers
    sync = _next_result(pgconn)
    if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
        return failure or (None, _connection_error(pgconn))
    return failure


def _leave_pipeline(pgconn: pq.abc.PGconn, statements: int) -> None:
    """Read what is left of the batch's answers, roll back a transaction a failure left
    open, and leave pipeline mode; on a broken connection, only leave it."""
    for _ in range(2 * statements + 2):  # each answer, the None after it, and the sync
        if pgconn.status != pq.ConnStatus.OK:
            break
        try:
            pgconn.exit_pipeline_mode()
            break
        except psycopg.OperationalError:  # answers are still due
            try:
                _next_result(pgconn)
            except psycopg.Error:
                return
    if pgconn.status != pq.ConnStatus.OK:
        return
    if pgconn.transaction_status == pq.TransactionStatus.INERROR:
        pgconn.send_query(_ROLLBACK)
        _send_all(pgconn)
        while _next_result(pgconn) is not None:
            pass


def _connection_error(pgconn: pq.abc.PGconn) -> str:
    message = pgconn.error_message.decode(errors="replace").strip()
    return message.splitlines()[0] if message else "the connection was lost"
