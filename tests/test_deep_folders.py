"""A job folder nested deeper than a walk that recurses could go: walked like any other, by
the scan, the backfill, the report and the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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
    _nest(top, DEPTH, {DEPTH // 2 + 1: {"half.csv": b"hh"}, DEPTH: {"bottom.csv": b"bbb"}})
    os.symlink("bottom.csv", top / DEEP / "link.csv")
    return data


def _nest(folder: Path, depth: int, files: dict[int, dict[str, bytes]] | None = None) -> None:
    """``depth`` levels of folders named d under ``folder``, made through descriptors (no
    path that long is ever opened); ``files[level]`` are written at that level."""
    folder.mkdir(exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            for name, data in (files or {}).get(level, {}).items():
                with open(os.open(name, os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
                    fh.write(data)
    finally:
        os.close(fd)


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


@pytest.fixture
def deeper_than_watchdog_walks(tmp_path: Path) -> Iterator[Path]:
    """One job whose outputs folder is nested 1,200 deep, past what os.walk() reaches on
    Python 3.11; removed by `rm`, which does not recurse either, not by pytest."""
    data = make_empty_tree(tmp_path)
    write_job(data, JOB)
    _nest(data / "outputs" / JOB, 1200)
    try:
        yield data
    finally:
        subprocess.run(["rm", "-rf", str(data / "outputs" / JOB)], check=True)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="os.walk() no longer recurses")
def test_the_daemon_that_cannot_watch_so_deep_says_why_without_a_traceback(
    cli: Any, dsn: str, deeper_than_watchdog_walks: Path
) -> None:
    result = cli("sync", deeper_than_watchdog_walks, "--dsn", dsn)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "is nested deeper than the file watcher can walk" in result.stderr
    assert "backfill and report still read it" in result.stderr
    backfill = cli("backfill", deeper_than_watchdog_walks, "--dsn", dsn)
    assert backfill.exit_code == 0, backfill.output
