"""The fingerprints recorded for batches of jobs, asked for ahead of the answers.

While the writers write, the main connection asks for the next batch's recorded
fingerprints and reads the answer one scan later: the server works on the question
meanwhile. Each question is a transaction of its own, with a sync point after it, and
carries the tool's own statement timeout: nothing holds a transaction open between two
questions (a pooler in transaction mode may hand the server connection to another
client there, and a role's idle_in_transaction_session_timeout does not fire).
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import psycopg
from psycopg import errors, pq

from comsa_migrate.db.faults import Limits

__all__ = ["Answer", "FingerprintQuestions"]

#: a question sent to the server; calling it reads the answer, {job id: fingerprint}
Answer = Callable[[], dict[str, str]]

_TIMEOUT = b"SELECT set_config('statement_timeout', $1, true)"
_QUERY = (
    b"SELECT s.job_id::text, s.fingerprint FROM comsa_migrate.job_state s"
    b" JOIN public.jobs j ON j.id = s.job_id WHERE s.job_id = ANY($1::uuid[])"
)


class FingerprintQuestions:
    """Questions on ``conn``, which nothing else may use until the block ends; answers
    are read in the order the questions were asked."""

    def __init__(self, conn: psycopg.Connection[Any], limits: Limits) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self._timeout = [limits.statement_timeout.encode()]
        self._asked = 0
        self._read = 0
        self._answers: dict[int, dict[str, str] | psycopg.Error] = {}

    def __enter__(self) -> FingerprintQuestions:
        self._conn.lock.acquire()
        try:
            self._pgconn.enter_pipeline_mode()
        except BaseException:
            self._conn.lock.release()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            while self._read < self._asked and self._pgconn.status == pq.ConnStatus.OK:
                self._read_one()
            if self._pgconn.status == pq.ConnStatus.OK:
                self._pgconn.exit_pipeline_mode()
        except psycopg.Error:
            if kind is None:
                raise
        finally:
            self._conn.lock.release()

    def ask(self, job_ids: Sequence[str]) -> Answer:
        """Send the question for these jobs (UUIDs: nothing to quote)."""
        ids = ("{" + ",".join(job_ids) + "}").encode()
        pgconn = self._pgconn
        pgconn.send_query_params(_TIMEOUT, self._timeout)
        pgconn.send_query_params(_QUERY, [ids])
        pgconn.pipeline_sync()
        fd = pgconn.socket
        while pgconn.flush():
            if select.select([fd], [fd], [])[0]:
                pgconn.consume_input()
        number, self._asked = self._asked, self._asked + 1

        def answer() -> dict[str, str]:
            while number not in self._answers:
                self._read_one()
            found = self._answers.pop(number)
            if isinstance(found, psycopg.Error):
                raise found
            return found

        return answer

    def _read_one(self) -> None:
        """Read the answer to the oldest question not read yet."""
        number, self._read = self._read, self._read + 1
        failure: psycopg.Error | None = None
        rows: dict[str, str] = {}
        for statement in range(2):
            result = self._next()
            if result is None:
                raise psycopg.OperationalError(self._lost())
            if result.status == pq.ExecStatus.FATAL_ERROR:
                failure = failure or _error(result)
            elif result.status == pq.ExecStatus.TUPLES_OK and statement == 1:
                rows = {
                    bytes(result.get_value(i, 0) or b"").decode(): bytes(
                        result.get_value(i, 1) or b""
                    ).decode()
                    for i in range(result.ntuples)
                }
            self._next()  # the None that ends each statement's answers
        sync = self._next()
        if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
            raise psycopg.OperationalError(self._lost())
        self._answers[number] = failure or rows

    def _next(self) -> pq.abc.PGresult | None:
        pgconn = self._pgconn
        while pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        return pgconn.get_result()

    def _lost(self) -> str:
        message = self._pgconn.error_message.decode(errors="replace").strip()
        return message.splitlines()[0] if message else "the connection was lost"


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    """The server's refusal as the psycopg exception of its SQLSTATE."""
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
    kind = errors.lookup(state.decode()) if state else psycopg.OperationalError
    return kind(message.decode(errors="replace"))
