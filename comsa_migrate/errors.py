"""The exception tree of comsa-migrate: every expected failure is a ComsaMigrateError."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ComsaMigrateError",
    "ConfigurationError",
    "DataDirError",
    "DatabaseUnavailable",
    "EXIT_BUG",
    "EXIT_STOPPED",
    "RunStopped",
    "SchemaError",
    "first_line",
]

#: exit code of a run stopped part-way: what was written before stays written
EXIT_STOPPED = 4
#: exit code of an unexpected error (a bug): its traceback is printed
EXIT_BUG = 70


class ComsaMigrateError(Exception):
    """Base of every expected failure; the CLI prints its message as one line."""

    exit_code = 2


class ConfigurationError(ComsaMigrateError):
    """A setting (DSN, option, environment) cannot be used."""


class DataDirError(ComsaMigrateError):
    """The legacy data folder is missing, unreadable or not a folder."""


class DatabaseUnavailable(ComsaMigrateError):
    """The database cannot be reached or refused the connection."""


class SchemaError(ComsaMigrateError):
    """The database schema cannot be brought to the expected version."""


class RunStopped(ComsaMigrateError):
    """A run that had started writing could not go on (the database went away).

    ``summary`` holds what was written until then.
    """

    exit_code = EXIT_STOPPED

    def __init__(self, message: str, summary: Any) -> None:
        super().__init__(message)
        self.summary = summary


def first_line(exc: BaseException) -> str:
    """An error's first line: a server's message without the statement and context it quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
