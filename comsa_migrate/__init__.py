"""comsa-migrate: migrate the COMSA dashboard's legacy job store into PostgreSQL."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from comsa_migrate.core.backfill import BackfillOptions, backfill
from comsa_migrate.core.summary import JobResult, Summary
from comsa_migrate.errors import (
    ComsaMigrateError,
    ConfigurationError,
    DatabaseUnavailable,
    DataDirError,
    SchemaError,
)
from comsa_migrate.problems import CODES, Problem, Severity

try:
    __version__ = version("comsa-migrate")  # from the package's metadata: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CODES",
    "BackfillOptions",
    "ComsaMigrateError",
    "ConfigurationError",
    "DataDirError",
    "DatabaseUnavailable",
    "JobResult",
    "Problem",
    "SchemaError",
    "Severity",
    "Summary",
    "__version__",
    "backfill",
]
