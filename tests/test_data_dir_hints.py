"""A folder given instead of DATA_DIR that leads to one is named in the error, by every
command that takes DATA_DIR, before any database is used: exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comsa_migrate.core.tree import check_data_dir
from comsa_migrate.errors import DataDirError

from .conftest import copy_fixture

COMMANDS = [("backfill",), ("backfill", "--dry-run"), ("report",), ("sync",)]
HINT = (
    "comsa-migrate: error: {given}: not a legacy data folder, but it looks like {what};"
    " did you mean {meant}?\n"
)


@pytest.fixture
def dashboard(tmp_path: Path) -> Path:
    """The dashboard's folder, with the sample tree as its backend/data."""
    data = copy_fixture("legacy-sample", tmp_path)
    root = tmp_path / "comsa-dashboard"
    (root / "backend").mkdir(parents=True)
    data.rename(root / "backend" / "data")
    return root


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("given", "what", "meant"),
    [
        ("backend", "the dashboard's backend folder", "backend/data"),
        ("backend/", "the dashboard's backend folder", "backend/data"),
        (".", "the dashboard's folder", "backend/data"),
        ("backend/data/jobs", "the jobs/ folder of a data folder", "backend/data"),
        ("backend/data/outputs/", "the outputs/ folder of a data folder", "backend/data"),
    ],
)
def test_a_folder_that_leads_to_the_data_folder_is_named_in_one_line_with_exit_2(
    cli: Any,
    dsn: str,
    dashboard: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
    given: str,
    what: str,
    meant: str,
) -> None:
    monkeypatch.chdir(dashboard)

    result = cli(*command, given, "--dsn", dsn)

    assert result.exit_code == 2, result.output
    shown = given.rstrip("/") or given
    assert result.stderr == HINT.format(given=shown, what=what, meant=meant)
    assert result.stdout == ""


def test_jobs_given_as_the_folder_one_is_in_names_its_parent_in_full(
    cli: Any, dsn: str, dashboard: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dashboard / "backend" / "data" / "jobs")

    result = cli("report", ".", "--dsn", dsn)

    assert result.exit_code == 2
    meant = dashboard / "backend" / "data"
    assert result.stderr.endswith(f"the jobs/ folder of a data folder; did you mean {meant}?\n")


def test_a_folder_named_jobs_with_nothing_of_a_job_store_around_it_gets_no_hint(
    tmp_path: Path,
) -> None:
    (tmp_path / "ci" / "jobs").mkdir(parents=True)
    (tmp_path / "ci" / "jobs" / "build.yml").write_text("")

    with pytest.raises(DataDirError, match=r"not a legacy data folder \(it has no jobs/"):
        check_data_dir(tmp_path / "ci" / "jobs")


def test_a_lone_jobs_folder_of_job_jsons_names_its_parent(tmp_path: Path) -> None:
    jobs = tmp_path / "copy" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "0a1b2c3d-0000-4000-8000-000000000001.json").write_text("{}")

    with pytest.raises(DataDirError, match=f"did you mean {tmp_path / 'copy'}\\?$"):
        check_data_dir(jobs)
