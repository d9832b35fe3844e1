"""Writing a batch of jobs: each job in a transaction of its own, the batch in one round trip.

Each job's transaction is ``BEGIN ISOLATION LEVEL READ COMMITTED``,
``comsa_migrate.apply_job_outcome()``, ``COMMIT``. The apply first gives the rest of the
transaction the tool's ``lock_timeout``, no idle limit, ``synchronous_commit = off`` and
``enable_seqscan = off`` (the plans the session keeps then find rows by key, however
small the tables were when they were made: see apply_job_outcome()) with
``set_config(..., true)``. The statement timeout is armed when a statement starts, so
where the tool's differs from the session's (asked once a batch) a statement before the
apply sets it, with the others; so it does for a job that stages large uploads, which are
sent before its apply. These settings hold for that transaction only, whatever the role's
defaults, and nothing outlives it, so a pooler (PgBouncer in transaction mode) hands its
next client the session as it was. The statements are sent in libpq's pipeline mode,
unnamed (no prepared statement outlives a transaction), with one sync point for the
batch: PgBouncer before 1.21 may hand a server connection to another client while answers
to a later sync point are still due on it. libpq is used directly: through psycopg's
cursors a job's statements cost more time on the client than the job costs the server
(see db/libpq_io.py for how it waits).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import pq

from comsa_migrate.db.faults import Limits
from comsa_migrate.db.libpq_io import (
    as_exception,
    error_of,
    leave_pipeline,
    lost,
    next_result,
    send_all,
    send_some,
)

__all__ = ["BatchFault", "StagedUpload", "write_batch"]

log = logging.getLogger(__name__)

_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"
_LIMITS = (
    b"SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),"
    b" set_config('idle_in_transaction_session_timeout', '0', true),"
    b" set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_STAGE = (
    b"INSERT INTO comsa_migrate.upload_chunks (job_id, filename, seq, chunk)"
    b" VALUES ($1::uuid, $2, $3::integer, $4)"
)
#: the job as text: its cast to jsonb is guarded with the rest of its write; the last
#: parameter is the lock timeout to set first, or NULL when the limits were sent before
_APPLY = b"SELECT comsa_migrate.apply_job_outcome($1, $2::boolean, $3::bigint, $4)"
#: which content each of the job's files had (only with a file store: file_store/keeping.py)
_RECORD = b"SELECT comsa_migrate.record_stored_files($1)"
_COMMIT = b"COMMIT"
_SESSION_TIMEOUT = b"SELECT current_setting('statement_timeout')"
#: what a statement sent is to its job: its outcome comes with the apply (and the count
#: of its record of stored files), and holds once the COMMIT has succeeded
_OTHER, _APPLIED, _RECORDED, _COMMITTED = range(4)


class StagedUpload(Protocol):
    """An upload of a job sent apart from its payload, as base64 chunks whose joining is
    the upload's base64 (core/uploads.py)."""

    @property
    def job_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    def chunks(self) -> Iterable[bytes]: ...


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
    payloads: Sequence[bytes | None],
    *,
    force: bool,
    run_id: int | None,
    limits: Limits,
    uploads: Sequence[Sequence[StagedUpload]] = (),
    stored: Sequence[bytes | None] = (),
) -> list[dict[str, Any]]:
    """Write each payload (a job as apply_job() reads it) in a transaction of its own, with
    its staged uploads (``uploads``, aligned with ``payloads``, or empty when no job has
    any), and return apply_job_outcome()'s answer for each, in order.

    ``stored`` (aligned with ``payloads``, or empty without a file store) is each job's
    record of its stored files, for record_stored_files() in the same transaction. A job
    with a record and no payload has only that written: a metadata sidecar, whose rows are
    the dashboard's (payload None, answer "metadata_only"), or a job skipped for its JSON
    or its uploads (payload b"", answer "skip").

    Raises BatchFault when not every job's answer and COMMIT came back.
    """
    limits_args = [limits.statement_timeout.encode(), limits.lock_timeout.encode()]
    tail = [b"t" if force else b"f", None if run_id is None else str(run_id).encode()]
    read = _Answers(len(payloads))
    with conn.lock:
        pgconn = conn.pgconn
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            raise RuntimeError("write_batch() needs an idle connection, outside a transaction")
        sync_sent = False
        try:
            timeout_differs = _session_timeout(pgconn) != limits_args[0]
            pgconn.enter_pipeline_mode()
            for job, payload in enumerate(payloads):
                staged = uploads[job] if uploads else ()
                read.send(pgconn, job, _BEGIN, None)
                # without an apply (only a job's files recorded) nothing else sets them
                limits_sent = timeout_differs or bool(staged) or not payload
                if limits_sent:
                    read.send(pgconn, job, _LIMITS, limits_args)
                for upload in staged:
                    _stage(pgconn, read, job, upload)
                if not payload:  # a sidecar (None) or a skipped job (b""): files only
                    read.unapplied[job] = "metadata_only" if payload is None else "skip"
                else:
                    lock_timeout = None if limits_sent else limits_args[1]
                    read.send(pgconn, job, _APPLY, [payload, *tail, lock_timeout], _APPLIED)
                if stored and stored[job] is not None:
                    read.send(pgconn, job, _RECORD, [stored[job]], _RECORDED)
                read.send(pgconn, job, _COMMIT, None, _COMMITTED)
                send_some(pgconn)
            pgconn.pipeline_sync()
            sync_sent = True
            send_all(pgconn)
            read.all(pgconn)
        except psycopg.Error as exc:  # the connection failed while sending or reading
            read.connection_failed(exc.sqlstate, str(exc).strip().splitlines()[0])
        finally:
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                leave_pipeline(pgconn, len(read.sent) - read.statements, sync_sent=sync_sent)
    if read.failure is not None:
        raise BatchFault(read.outcomes, *read.failure, read.failed_at, read.unknown)
    return [outcome for outcome in read.outcomes if outcome is not None]


def _stage(pgconn: pq.abc.PGconn, read: _Answers, job: int, upload: StagedUpload) -> None:
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
        read.send(pgconn, job, _STAGE, [*key, str(seq).encode(), chunk])
        send_all(pgconn)


def _session_timeout(pgconn: pq.abc.PGconn) -> bytes:
    """The statement timeout a transaction of this session has unless told otherwise; asked
    for each batch, so that a role's default changed meanwhile is heeded."""
    pgconn.send_query_params(_SESSION_TIMEOUT, None)
    send_all(pgconn)
    result = next_result(pgconn)
    if result is None:
        raise as_exception(None, lost(pgconn))
    while next_result(pgconn) is not None:
        pass
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise as_exception(*error_of(result))
    return result.get_value(0, 0) or b""


class _Answers:
    """The statements of one batch as sent, and their answers as they arrive: each job's
    outcome once its COMMIT is."""

    def __init__(self, jobs: int) -> None:
        self.outcomes: list[dict[str, Any] | None] = [None] * jobs
        #: the answer of a job with no apply, whose files alone are recorded
        self.unapplied: dict[int, str] = {}
        self.sent: list[tuple[int, int]] = []  # (job, what the statement is to it)
        self.statements = 0  # answers read so far
        self.failure: tuple[str | None, str] | None = None
        self.failed_at: int | None = None
        self.unknown = False
        self._answer: dict[str, Any] | None = None

    def send(
        self,
        pgconn: pq.abc.PGconn,
        job: int,
        query: bytes,
        params: Sequence[bytes | None] | None,
        role: int = _OTHER,
    ) -> None:
        pgconn.send_query_params(query, params)
        self.sent.append((job, role))

    def all(self, pgconn: pq.abc.PGconn) -> None:
        for job, role in self.sent:
            result = next_result(pgconn)
            if result is None:
                self.connection_failed(None, lost(pgconn))
                return
            self._take(job, role, result)
            self.statements += 1
            next_result(pgconn)  # the None that ends each statement's answers
        sync = next_result(pgconn)
        if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
            self.connection_failed(None, lost(pgconn))

    def connection_failed(self, sqlstate: str | None, message: str) -> None:
        """The connection failed: a job whose COMMIT was sent but not answered may or may
        not be written."""
        self.failure = self.failure or (sqlstate, message)
        if self.statements < len(self.sent):
            self.unknown = True

    def _take(self, job: int, role: int, result: pq.abc.PGresult) -> None:
        if result.status == pq.ExecStatus.FATAL_ERROR and self.failure is None:
            self.failure = error_of(result)
            self.failed_at = job
        elif role == _APPLIED and result.status == pq.ExecStatus.TUPLES_OK:
            value = result.get_value(0, 0)
            self._answer = None if value is None else orjson.loads(value)
        elif role == _RECORDED and result.status == pq.ExecStatus.TUPLES_OK:
            recorded = orjson.loads(result.get_value(0, 0) or b"{}")
            unapplied = {"action": self.unapplied.get(job, "metadata_only")}
            self._answer = {**(self._answer or unapplied), **recorded}
        elif role == _COMMITTED:
            if result.status == pq.ExecStatus.COMMAND_OK:
                self.outcomes[job] = self._answer
            self._answer = None
