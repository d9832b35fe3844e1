"""A job folder nested deeper than a walk that recurses could go: walked like any other, by
the scan, the backfill, the report and the daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from comsa_migrate.core import tree
from comsa_migrate.core.layout import JobSource

from .helpers import file_rows, make_empty_tree, running_daemon, wait_until, write_job

JOB = "0a1b2c3d-0000-4000-8000-00000000deef"
#: levels of one-letter folders: more than Python's recursion limit lets a walk that takes
#: two frames a level go; fewer than one frame a level would reach, which os.walk() takes
#: on Python 3.11 (watchdog's, pytest's own clean-up)
DEPTH = 700
DEEP = "/".join(["d"] * DEPTH)

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


@pytest.fixture
def deep_data(tmp_path: Path) -> Path:
    """One job whose outputs folder holds a file at the top, a file and a link at the
    bottom of DEPTH nested folders, and a file halfway down beside the next level."""
    data = make_empty_tree(tmp_path)
    write_job(data, JOB)
    top = data / "outputs" / JOB
    top.mkdir()
    (top / "top.csv").write_bytes(b"t")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if level == DEPTH // 2:
                with open(os.open("half.csv", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
                    fh.write(b"hh")
        with open(os.open("bottom.csv", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
            fh.write(b"bbb")
        os.symlink("bottom.csv", "link.csv", dir_fd=fd)
    finally:
        os.close(fd)
    return data


def expected_files() -> dict[str, int]:
    half = "/".join(["d"] * (DEPTH // 2 + 1))
    return {
        f"data/outputs/{JOB}/top.csv": 1,
        f"data/outputs/{JOB}/{half}/half.csv": 2,
        f"data/outputs/{JOB}/{DEEP}/bottom.csv": 3,
    }


def test_the_scan_walks_it_to_the_bottom_and_leaves_no_descriptor_open(deep_data: Path) -> None:
    (source,) = [item for item in tree.scan(deep_data) if isinstance(item, JobSource)]

    assert {f"data/{f.file_path}": f.size for f in source.files} == expected_files()
    assert [(p.code, p.path) for p in source.problems] == [
        ("symlink_skipped", f"outputs/{JOB}/{DEEP}/link.csv")
    ]
    assert not [target for target in _open_paths() if target.startswith(str(deep_data))]


def _open_paths() -> list[str]:
    """What this process's descriptors point to (Linux; nothing elsewhere)."""
    if not os.path.isdir("/proc/self/fd"):
        return []
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed since the listing
    return targets


def test_the_backfill_writes_the_job_with_every_file(cli: Any, dsn: str, deep_data: Path) -> None:
    result = cli("backfill", deep_data, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "1 inserted" in " ".join(result.stdout.split())
    assert file_rows(dsn, JOB) == expected_files()


def test_the_report_plans_the_job_as_an_insert(cli: Any, dsn: str, deep_data: Path) -> None:
    result = cli("report", deep_data, "--dsn", dsn, "--format", "json")
    report = orjson.loads(result.stdout)

    assert result.exit_code == 0, result.output
    assert [(job["id"], job["action"]) for job in report["jobs"]] == [(JOB, "insert")]
    assert [p["code"] for p in report["problems"]] == ["symlink_skipped"]


def test_the_daemon_syncs_the_job_with_every_file(dsn: str, deep_data: Path) -> None:
    with running_daemon(dsn, deep_data):
        rows = wait_until(lambda: file_rows(dsn, JOB), what="the job's files")

    assert rows == expected_files()
