"""Faults of the server or the session, as opposed to a refusal of one job's rows.

A job the database refuses (a value out of range, a constraint) is that job's problem,
and the run goes on. A fault of the whole run (the disk full, memory or connections run
out, the server shutting down, the connection lost, a limit that cancelled a statement)
would refuse every job after it the same way: the run stops there with one line that
names the cause, and a daemon waits for the server to recover. The SQLSTATE classes
taken as such are those of ``RUN_FAULT_CLASSES``; schema/functions/40_apply_job.sql
stops a batch on the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_LIMITS",
    "RUN_FAULT_CLASSES",
    "Limits",
    "describe_fault",
    "describe_refusal",
    "is_run_fault",
    "is_server_fault",
    "set_limits",
]

#: SQLSTATE classes that are faults of the run, not of a job
RUN_FAULT_CLASSES = frozenset({"08", "53", "57", "58", "XX"})

_CAUSES = {
    "53100": "the database is out of disk space",
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
    "53400": "the database server refused a configuration limit",
    "57P01": "the database server is shutting down",
    "57P02": "the database server crashed and is restarting",
    "57P03": "the database server is not accepting connections yet",
    "57P04": "the database was dropped",
    "57P05": "the database session was ended for being idle",
    "58030": "the database server could not read or write a file",
    "25P03": "the database ended a transaction left idle",
}
_CLASS_CAUSES = {
    "08": "the database connection was lost",
    "53": "the database server ran out of a resource",
    "57": "an operator or the server stopped the work",
    "58": "the database server met a system error",
    "XX": "the database server met an internal error",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """The tool's own limits for its own transactions, set with set_config(..., true)
    whatever the role's defaults are; "0" turns a limit off."""

    statement_timeout: str = "0"  # each statement the tool sends, such as one job's write
    lock_timeout: str = "0"  # each wait for a lock, a job's own lock included


DEFAULT_LIMITS = Limits()
#: the limits for the rest of the caller's transaction, whatever the role's defaults
_SET_LIMITS = (
    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
    " set_config('idle_in_transaction_session_timeout', '0', true)"
)


def set_limits(conn: Any, limits: Limits) -> None:
    """Give the transaction open on ``conn`` the tool's own limits (a psycopg connection)."""
    conn.execute(_SET_LIMITS, [limits.statement_timeout, limits.lock_timeout])


def is_run_fault(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE is a fault of the run (None: no answer at all,
    which is a connection lost)."""
    return sqlstate is None or sqlstate[:2] in RUN_FAULT_CLASSES or sqlstate == "25P03"


def describe_fault(sqlstate: str | None, message: str, limits: Limits | None = None) -> str:
    """One line naming the cause of what stopped a run, and the server's own words (None:
    no answer at all, a connection lost)."""
    if sqlstate == "57014":
        return _cancelled(message, limits or Limits())
    cause = _CAUSES.get(sqlstate or "") or _CLASS_CAUSES.get((sqlstate or "08")[:2])
    return f"{cause or 'the database stopped the run'}: {message}"


def is_server_fault(sqlstate: str | None) -> bool:
    """Whether the server's answer (not a silence) says the run, not a job, is at fault."""
    return sqlstate is not None and is_run_fault(sqlstate)


def describe_refusal(sqlstate: str | None, message: str, limits: Limits) -> str:
    """The database's reason for refusing one job, naming the tool's limit that cancelled
    its write when one did."""
    if sqlstate == "57014" and "statement timeout" in message:
        return f"--statement-timeout {limits.statement_timeout} cancelled its write ({message})"
    if sqlstate == "55P03":
        return f"--lock-timeout {limits.lock_timeout} cancelled the wait for a lock ({message})"
    return message


def _cancelled(message: str, limits: Limits) -> str:
    if "statement timeout" in message:
        return f"--statement-timeout {limits.statement_timeout} cancelled a statement ({message})"
    return f"the database cancelled a statement: {message}"
