"""An upload's bytes for job_input_files are read from where the scan saw the file, never
through a symbolic link put on the way since."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.tree import scan
from comsa_migrate.core.uploads import input_contents

JOB = "0a1b2c3d-0000-4000-8000-000000000001"
OLD_NS = 1_700_000_000_000_000_000


@pytest.fixture
def scanned(tmp_path: Path) -> tuple[Path, JobSource]:
    """A job with uploads/<id>/sub/input.csv, scanned; and a secret file outside the tree."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / f"{JOB}.json").write_text('{"type": "openva", "status": "completed"}')
    (data / "uploads" / JOB / "sub").mkdir(parents=True)
    (data / "uploads" / JOB / "sub" / "input.csv").write_text("ID\n1\n")
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub" / "input.csv").write_text("secret\n")
    for path in data.rglob("*"):
        os.utime(path, ns=(OLD_NS, OLD_NS))
    [source] = [item for item in scan(data) if isinstance(item, JobSource)]
    return data, source


def test_an_upload_is_read_as_the_scan_saw_it(scanned: tuple[Path, JobSource]) -> None:
    data, source = scanned

    contents, problems = input_contents(data, source, 1024)

    assert contents == [("input.csv", "SUQKMQo=")]  # base64 of "ID\n1\n"
    assert problems == []


@pytest.mark.parametrize("swapped", [JOB, f"{JOB}/sub"])
def test_a_folder_swapped_for_a_symlink_since_the_scan_is_not_read_through(
    scanned: tuple[Path, JobSource], swapped: str
) -> None:
    data, source = scanned
    outside = data.parent / "outside" / ("sub" if swapped.endswith("sub") else "")
    shutil.rmtree(data / "uploads" / swapped)
    (data / "uploads" / swapped).symlink_to(outside)

    contents, problems = input_contents(data, source, 1024)

    assert contents == []
    assert [(p.code, p.path) for p in problems] == [("unreadable", f"uploads/{JOB}/sub/input.csv")]
    assert "since the scan" in problems[0].message


def test_a_file_swapped_for_a_fifo_since_the_scan_is_not_read_as_empty(
    scanned: tuple[Path, JobSource],
) -> None:
    data, source = scanned
    upload = data / "uploads" / JOB / "sub" / "input.csv"
    upload.unlink()
    os.mkfifo(upload)

    contents, problems = input_contents(data, source, 1024)

    assert contents == []
    assert [p.code for p in problems] == ["unreadable"]
