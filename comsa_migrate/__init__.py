"""comsa-migrate: migrate the COMSA dashboard's legacy job store into PostgreSQL.

The public API, for use as a library::

    import psycopg
    from pathlib import Path
    from comsa_migrate import BackfillOptions, WriteOptions, backfill

    with psycopg.connect("postgresql:///comsa", autocommit=True) as conn:
        summary = backfill(conn, BackfillOptions(Path("backend/data")))
        again = backfill(conn, BackfillOptions(Path("backend/data"), WriteOptions(force=True)))

``WriteOptions`` are how jobs are written, the same for every use. ``build_report``
plans a backfill without writing, and ``Daemon`` keeps a database in
step with the tree. What a migration finds is told to each ``Observer`` given: one
``on_problem`` per Problem and one ``on_job`` per job. ``build_report`` and ``Daemon``
are imported on first use, so that importing the package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.errors import (
    ComsaMigrateError,
    ConfigurationError,
    DatabaseUnavailable,
    DataDirError,
    LockHeld,
    RunStopped,
    SchemaError,
)
from comsa_migrate.observer import JobResult, Observer
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.pipeline.summary import Summary
from comsa_migrate.problems import CODES, Problem, Severity
from comsa_migrate.version import __version__

if TYPE_CHECKING:
    from comsa_migrate.report.plan import build_report
    from comsa_migrate.report.result import Report
    from comsa_migrate.sync.daemon import Daemon, SyncOptions


__all__ = [
    "CODES",
    "BackfillOptions",
    "ComsaMigrateError",
    "ConfigurationError",
    "Daemon",
    "DataDirError",
    "DatabaseUnavailable",
    "JobResult",
    "LockHeld",
    "Observer",
    "Problem",
    "Report",
    "RunStopped",
    "SchemaError",
    "Severity",
    "Summary",
    "SyncOptions",
    "WriteOptions",
    "__version__",
    "backfill",
    "build_report",
]

#: names imported on first use: the report's planning, and the daemon with watchdog
_LAZY = {
    "build_report": "comsa_migrate.report.plan",
    "Report": "comsa_migrate.report.result",
    "Daemon": "comsa_migrate.sync.daemon",
    "SyncOptions": "comsa_migrate.sync.daemon",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'comsa_migrate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
