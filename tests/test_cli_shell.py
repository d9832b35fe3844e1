"""The command group: exit codes returned by commands, failures as one line, logging to stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comsa_migrate.cli import main


def test_a_missing_data_folder_is_one_line_on_stderr_and_exit_2(tmp_path: Path, cli: Any) -> None:
    result = cli("backfill", tmp_path / "nowhere", "--dsn", "postgresql://nobody@127.0.0.1/none")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("comsa-migrate: error: ")
    assert result.stderr.count("\n") == 1


def test_an_unreachable_database_is_one_line_without_the_password_and_exit_2(
    sample_tree: Path, cli: Any
) -> None:
    dsn = "postgresql://someone:s3cret-pw@127.0.0.1:1/none?connect_timeout=2"

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 2
    assert result.stderr.startswith("comsa-migrate: error: cannot connect to ")
    assert result.stderr.count("\n") == 1
    assert "s3cret-pw" not in result.output


def test_psql_exits_with_the_code_of_psql(dsn: str, cli: Any) -> None:
    assert cli("psql", "--dsn", dsn, "-c", "SELECT 1").exit_code == 0
    assert cli("psql", "--dsn", dsn, "-v", "ON_ERROR_STOP=1", "-c", "SELECT nope").exit_code == 1


def test_without_standalone_mode_the_group_gives_the_exit_code_back(sample_tree: Path) -> None:
    code = main.main(
        ["report", str(sample_tree), "--offline", "--output", str(sample_tree / "r.txt")],
        standalone_mode=False,
    )

    assert code == 0


def test_an_unknown_command_is_a_usage_error_with_exit_2(cli: Any) -> None:
    result = cli("frobnicate")

    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_command_logs_to_stderr_with_logger_names_and_info_only_with_v(
    empty_dsn: str, verbose: bool
) -> None:
    flags = ["-v"] if verbose else []
    result = subprocess.run(
        [sys.executable, "-m", "comsa_migrate", *flags, "init-db", "--dsn", empty_dsn],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "applied 001_initial_schema.sql" in result.stdout
    logged = " INFO comsa_migrate.db.migrations: applied migration 001_initial_schema.sql"
    assert (logged in result.stderr) is verbose
