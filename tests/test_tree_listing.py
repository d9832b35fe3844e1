"""check_data_dir refuses a tree that cannot be listed before anything is written; a folder
that stops being listable during a scan is a problem of its own, never an exception."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pyfakefs.fake_filesystem import FakeFilesystem
from pyfakefs.fake_filesystem_unittest import Patcher

from comsa_migrate.core.job_folders import Listing
from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.tree import check_data_dir, scan
from comsa_migrate.errors import DataDirError
from comsa_migrate.problems import Problem

from .helpers import write_job

FAKE = Path("/srv/backend/data")
JOBS = [f"0a1b2c3d-0000-4000-8000-{n:012d}" for n in range(1, 6)]
JOB_JSON = '{"type": "openva", "status": "completed"}'


@pytest.fixture
def fake_five_job_tree() -> Iterator[FakeFilesystem]:
    """Five jobs with an upload and an output each, on a file system that enforces modes."""
    with Patcher(allow_root_user=False) as patcher:
        fs = patcher.fs
        assert fs is not None
        for job_id in JOBS:
            fs.create_file(FAKE / "jobs" / f"{job_id}.json", contents=JOB_JSON)
            fs.create_file(FAKE / "uploads" / job_id / "input.csv", contents="ID\n1\n")
            fs.create_file(FAKE / "outputs" / job_id / "causes.csv", contents="c\n")
        yield fs


@pytest.mark.parametrize("folder", ["jobs", "uploads", "outputs"])
@pytest.mark.parametrize("mode", [0, 0o300, 0o600])
def test_a_top_level_folder_that_cannot_be_listed_or_entered_is_a_data_dir_error(
    fake_five_job_tree: FakeFilesystem, folder: str, mode: int
) -> None:
    os.chmod(FAKE / folder, mode)

    with pytest.raises(DataDirError, match=f"{folder}: permission denied"):
        check_data_dir(FAKE)


def test_a_readable_tree_passes_the_check(fake_five_job_tree: FakeFilesystem) -> None:
    os.chmod(FAKE / "jobs" / f"{JOBS[0]}.json", 0)  # a job's own problem, later

    check_data_dir(FAKE)


def test_a_missing_top_level_folder_is_not_checked(fake_five_job_tree: FakeFilesystem) -> None:
    fake_five_job_tree.remove_object(str(FAKE / "uploads"))

    check_data_dir(FAKE)


def test_uploads_made_unenterable_during_the_scan_makes_the_jobs_after_unreadable(
    fake_five_job_tree: FakeFilesystem,
) -> None:
    items = scan(FAKE)
    first = next(items)
    os.chmod(FAKE / "uploads", 0)

    rest = list(items)

    jobs = [i for i in [first, *rest] if isinstance(i, JobSource)]
    found = sorted((p.code, p.path, p.job_id or "-") for p in rest if isinstance(p, Problem))
    assert isinstance(first, JobSource)
    assert len(jobs) == 1  # the others' upload folders cannot be entered any more
    assert found == sorted(("unreadable", f"uploads/{j}", j) for j in JOBS if j != first.job_id)


def test_uploads_that_cannot_be_listed_when_the_scan_lists_them_is_a_problem_and_each_job_looks(
    fake_five_job_tree: FakeFilesystem,
) -> None:
    fake_five_job_tree.create_file(FAKE / "notes.txt")  # the scan pauses after reporting it
    items = scan(FAKE)
    stray = next(items)
    os.chmod(FAKE / "uploads", 0)

    rest = list(items)

    problems = sorted((p.code, p.path) for p in rest if isinstance(p, Problem))
    assert isinstance(stray, Problem) and stray.code == "stray_file"
    assert not [i for i in rest if isinstance(i, JobSource)]  # none written without its upload
    assert problems == sorted(
        [("unreadable", "uploads"), *(("unreadable", f"uploads/{j}") for j in JOBS)]
    )


def test_a_folder_that_cannot_be_listed_leaves_every_job_to_look_for_its_own(
    fake_five_job_tree: FakeFilesystem,
) -> None:
    os.chmod(FAKE / "uploads", 0)

    listing = Listing(str(FAKE), "uploads")

    assert listing.problem is not None and listing.problem.code == "unreadable"
    assert listing.holds(JOBS[0]) and listing.holds("anything")
    assert list(listing.unclaimed()) == []


def test_jobs_made_unlistable_before_it_is_scanned_is_a_problem(
    fake_five_job_tree: FakeFilesystem,
) -> None:
    fake_five_job_tree.create_file(FAKE / "notes.txt")
    items = scan(FAKE)
    assert isinstance(next(items), Problem)  # the stray file, before jobs/ is listed
    os.chmod(FAKE / "jobs", 0)

    found = [(p.code, p.path) for p in items if isinstance(p, Problem)]

    assert ("unreadable", "jobs") in found


def test_a_backfill_whose_uploads_cannot_be_listed_by_the_scan_writes_the_jobs_and_exits_1(
    cli: Any,
    dsn: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Root lists every folder: the scan's listing is refused by a stand-in for os.listdir."""
    data = tmp_path / "data"
    for job_id in JOBS:
        write_job(data, job_id)
        (data / "uploads" / job_id).mkdir(parents=True)
        (data / "uploads" / job_id / "input.csv").write_text("ID\n1\n")
    uploads = os.fspath(data / "uploads")
    real_listdir = os.listdir

    def listdir(path: Any = ".") -> Any:
        if not isinstance(path, int) and os.fspath(path) == uploads:
            raise PermissionError(13, "Permission denied", uploads)  # the checks before pass
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)

    result = cli("backfill", data, "--dsn", dsn)

    assert result.exit_code == 1, result.output
    assert "5 inserted" in " ".join(result.stdout.split())
    assert "unreadable" in result.stdout and "Traceback" not in result.output
    files = conn.execute("SELECT count(*) FROM job_files WHERE file_type = 'input'").fetchone()
    assert files == (len(JOBS),)  # each job found its own upload folder all the same
