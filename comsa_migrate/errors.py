"""The exception tree of comsa-migrate: every expected failure is a ComsaMigrateError."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import ProgrammingError

__all__ = [
    "ComsaMigrateError",
    "ConfigurationError",
    "DataDirError",
    "DatabaseUnavailable",
    "EXIT_BUG",
    "EXIT_CANNOT_RUN",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_SKIPPED",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "EmbeddedInUse",
    "FileStoreError",
    "LockHeld",
    "ProgramNotRun",
    "RunStopped",
    "SchemaError",
    "first_line",
]

#: the exit codes of every command, in one place (the README's tables say them)
EXIT_OK = 0  # every job written or unchanged; a report without errors; a daemon stopped
EXIT_SKIPPED = 1  # some job skipped (an error or a conflict); a report that fails;
#                  embedded reset not confirmed
EXIT_USAGE = 2  # usage, configuration, connection or a missing right: nothing written
EXIT_LOCKED = 3  # another sync daemon of the same name holds the lock
EXIT_STOPPED = 4  # a run stopped part-way: what was written before stays written
EXIT_BUG = 70  # an unexpected error (a bug): its traceback is printed
EXIT_CANNOT_RUN = 127  # embedded run: the program cannot be found or run (as env(1) says it)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; the jobs written so far stay written


class ComsaMigrateError(Exception):
    """Base of every expected failure; the CLI prints its message as one line."""

    exit_code = EXIT_USAGE


class ConfigurationError(ComsaMigrateError):
    """A setting (DSN, option, environment) cannot be used."""


class DataDirError(ComsaMigrateError):
    """The legacy data folder is missing, unreadable or not a folder."""


class DatabaseUnavailable(ComsaMigrateError):
    """The database cannot be reached or refused the connection."""


class FileStoreError(ComsaMigrateError):
    """The file store (--file-store) cannot be reached, or refused a request."""


class EmbeddedInUse(ComsaMigrateError):
    """The embedded server cannot be removed: a live process uses it."""


class ProgramNotRun(ComsaMigrateError):
    """The program given to embedded run cannot be found or started."""

    exit_code = EXIT_CANNOT_RUN


class SchemaError(ComsaMigrateError):
    """The database schema cannot be brought to the expected version."""


class LockHeld(ComsaMigrateError):
    """Another sync daemon of the same name holds the lock on this database."""

    exit_code = EXIT_LOCKED


class RunStopped(ComsaMigrateError):
    """A run that had started writing could not go on (the database went away).

    ``summary`` holds what was written until then.
    """

    exit_code = EXIT_STOPPED

    def __init__(self, message: str, summary: Any) -> None:
        super().__init__(message)
        self.summary = summary


def first_line(exc: BaseException, *, dsn: str | None = None) -> str:
    """An error's first line: a server's message without the statement and context it quotes.

    With ``dsn``, its password reads *** wherever the message quotes it (libpq's
    connection errors may quote the connection string).
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    password = _password(dsn) if dsn else None
    return line.replace(password, "***") if password else line


def _password(dsn: str) -> str | None:
    try:
        password = conninfo_to_dict(dsn).get("password")
    except ProgrammingError:  # an unparsable DSN: psycopg names that problem itself
        return None
    return str(password) if password else None
