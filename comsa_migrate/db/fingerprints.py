"""The fingerprints recorded for batches of jobs, asked for ahead of the answers.

While the writers write, the main connection asks for the next batch's recorded
fingerprints and reads the answer one scan later: the server works on the question
meanwhile. Each question is a transaction of its own, with a sync point after it, and
carries the tool's own statement timeout: nothing holds a transaction open between two
questions (a pooler in transaction mode may hand the server connection to another
client there, and a role's idle_in_transaction_session_timeout does not fire).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq

from comsa_migrate.db.faults import Limits, set_limits
from comsa_migrate.db.libpq_io import as_exception, error_of, lost, next_result, send_all

__all__ = ["RECORDED", "DeferredFingerprints", "FingerprintQuestions", "recorded_fingerprints"]

#: a question sent to the server; calling it reads the answer, {job id: fingerprint}
DeferredFingerprints = Callable[[], dict[str, str]]

_TIMEOUT = b"SELECT set_config('statement_timeout', $1, true)"
#: the fingerprints recorded for jobs whose `jobs` row is still there; {ids} is the
#: parameter's placeholder, an array of UUIDs
RECORDED = (
    "SELECT s.job_id::text, s.fingerprint FROM comsa_migrate.job_state s"
    " JOIN public.jobs j ON j.id = s.job_id WHERE s.job_id = ANY({ids}::uuid[])"
)
_QUERY = RECORDED.format(ids="$1").encode()


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

    def ask(self, job_ids: Sequence[str]) -> DeferredFingerprints:
        """Send the question for these jobs (UUIDs: nothing to quote)."""
        ids = ("{" + ",".join(job_ids) + "}").encode()
        pgconn = self._pgconn
        pgconn.send_query_params(_TIMEOUT, self._timeout)
        pgconn.send_query_params(_QUERY, [ids])
        pgconn.pipeline_sync()
        send_all(pgconn)
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
            result = next_result(self._pgconn)
            if result is None:
                raise psycopg.OperationalError(lost(self._pgconn))
            if result.status == pq.ExecStatus.FATAL_ERROR:
                failure = failure or as_exception(*error_of(result))
            elif result.status == pq.ExecStatus.TUPLES_OK and statement == 1:
                rows = {
                    bytes(result.get_value(i, 0) or b"").decode(): bytes(
                        result.get_value(i, 1) or b""
                    ).decode()
                    for i in range(result.ntuples)
                }
            next_result(self._pgconn)  # the None that ends each statement's answers
        sync = next_result(self._pgconn)
        if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
            raise psycopg.OperationalError(lost(self._pgconn))
        self._answers[number] = failure or rows


def recorded_fingerprints(
    conn: psycopg.Connection[Any], job_ids: Sequence[str], limits: Limits
) -> DeferredFingerprints:
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
