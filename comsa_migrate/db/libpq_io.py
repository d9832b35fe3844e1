"""Sending and reading through libpq's pipeline mode on a psycopg connection's own PGconn.

The connection stays non-blocking, as psycopg keeps it: each wait is a poll() on the
socket, which lets the other threads run (a blocking libpq call would hold the
interpreter lock) and has no limit on the descriptor's number.
"""

from __future__ import annotations

import contextlib
import select

import psycopg
from psycopg import errors, pq

__all__ = [
    "as_exception",
    "error_of",
    "leave_pipeline",
    "lost",
    "next_result",
    "send_all",
    "send_some",
]


def _wait(pgconn: pq.abc.PGconn, *, write: bool) -> bool:
    """Wait until the socket is readable (or, with ``write``, writable); True if readable."""
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | (select.POLLOUT if write else 0))
    events = poller.poll()
    return any(mask & (select.POLLIN | select.POLLERR | select.POLLHUP) for _, mask in events)


def send_some(pgconn: pq.abc.PGconn) -> None:
    """Send what libpq holds if the socket takes it now, and take in what came meanwhile,
    so that neither side's buffers fill up while a large batch is queued."""
    if not pgconn.flush():
        return
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    if poller.poll(0):
        pgconn.consume_input()


def send_all(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        if _wait(pgconn, write=True):
            pgconn.consume_input()


def next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pgconn.is_busy():
        _wait(pgconn, write=False)
        pgconn.consume_input()
    return pgconn.get_result()


def error_of(result: pq.abc.PGresult) -> tuple[str | None, str]:
    """A failed result's SQLSTATE and primary message."""
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
    return (state.decode() if state else None, message.decode(errors="replace"))


def as_exception(sqlstate: str | None, message: str) -> psycopg.Error:
    """The psycopg exception of a SQLSTATE, as psycopg itself would raise it."""
    kind = errors.lookup(sqlstate) if sqlstate else psycopg.OperationalError
    return kind(message)


def lost(pgconn: pq.abc.PGconn) -> str:
    """libpq's words for a connection that failed."""
    message = pgconn.error_message.decode(errors="replace").strip()
    return message.splitlines()[0] if message else "the connection was lost"


def leave_pipeline(pgconn: pq.abc.PGconn, answers_due: int, *, sync_sent: bool) -> None:
    """Read what is still due, roll back a transaction a failure left open, and leave
    pipeline mode; on a broken connection, only leave it."""
    if pgconn.status != pq.ConnStatus.OK:
        with contextlib.suppress(psycopg.Error):
            pgconn.exit_pipeline_mode()
        return
    try:
        if not sync_sent:  # without a sync point the server sends nothing more
            pgconn.pipeline_sync()
            send_all(pgconn)
        for _ in range(2 * answers_due + 2):  # each answer, the None after it, the sync
            try:
                pgconn.exit_pipeline_mode()
                break
            except psycopg.OperationalError:  # answers are still due
                next_result(pgconn)
        if pgconn.transaction_status == pq.TransactionStatus.INERROR:
            pgconn.send_query(b"ROLLBACK")
            send_all(pgconn)
            while next_result(pgconn) is not None:
                pass
    except psycopg.Error:
        with contextlib.suppress(psycopg.Error):
            pgconn.exit_pipeline_mode()
