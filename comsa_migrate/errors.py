"""The exception tree of comsa-migrate: every expected failure is a ComsaMigrateError."""

from __future__ import annotations

__all__ = [
    "ComsaMigrateError",
    "ConfigurationError",
    "DataDirError",
    "DatabaseUnavailable",
    "SchemaError",
]


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
