"""Folders, FIFOs, sockets and devices where files belong: never opened, never quiet."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.tree import job_source, scan
from comsa_migrate.problems import Problem

from .helpers import age_tree, job_counts, job_row, running_daemon, wait_until, write_job

JOB = "0a1b2c3d-0000-4000-8000-00000000abcd"
OTHER = "0a1b2c3d-0000-4000-8000-00000000ef01"

# watchdog warns, from its own thread, when it adds again the watch of a folder made with
# its parents (mkdir -p) in one go; harmless, and the daemon's CLI silences it too
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


@contextlib.contextmanager
def unix_socket(path: Path) -> Iterator[None]:
    """A listening UNIX socket at ``path`` (bound from its folder: paths may be long)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
        sock.listen()
        yield
    finally:
        os.chdir(cwd)
        sock.close()


def make_device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # as /dev/null
    except PermissionError:
        pytest.skip("making a device node needs root")


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_folder(path: Path) -> None:
    path.mkdir()
    (path / "inside.json").write_text("{}")


KINDS: dict[str, Callable[[Path], None]] = {
    "folder": make_folder,
    "fifo": make_fifo,
    "device": make_device,
}


def problems(data: Path) -> list[tuple[str, str | None, str | None]]:
    """Every problem of a scan, the jobs' own included, as sorted (code, job id, path)."""
    found: list[Problem] = []
    for item in scan(data):
        found += item.problems if isinstance(item, JobSource) else [item]
    return sorted((p.code, p.job_id, p.path) for p in found)


# -- in place of a job JSON: an error of that job -------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_odd_file_in_place_of_a_job_json_is_not_a_file_of_that_job(
    data: Path, kind: str
) -> None:
    KINDS[kind](data / "jobs" / f"{JOB}.json")
    (data / "outputs" / JOB).mkdir()

    assert problems(data) == [("not_a_file", JOB, f"jobs/{JOB}.json")]


def test_a_socket_in_place_of_a_job_json_is_not_a_file_of_that_job(data: Path) -> None:
    with unix_socket(data / "jobs" / f"{JOB}.json"):
        found = problems(data)

    assert found == [("not_a_file", JOB, f"jobs/{JOB}.json")]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_job_source_says_not_a_file_too(data: Path, kind: str) -> None:
    KINDS[kind](data / "jobs" / f"{JOB}.json")

    found = job_source(data, JOB)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id) == ("not_a_file", JOB)


def test_backfill_and_report_fail_on_a_fifo_in_place_of_a_job_json_and_write_the_rest(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any]
) -> None:
    os.mkfifo(data / "jobs" / f"{JOB}.json")
    write_job(data, OTHER)

    backfill = cli("backfill", data, "--dsn", dsn)  # it would hang if it opened the FIFO
    report = cli("report", data, "--dsn", dsn, "--format", "json")

    assert backfill.exit_code == 1, backfill.output
    assert job_counts(backfill.stdout) == (1, 0, 0, 1, 0)  # inserted ... skipped, conflicts
    assert "not_a_file" in backfill.stdout
    assert conn.execute("SELECT id::text FROM jobs").fetchall() == [(OTHER,)]
    assert report.exit_code == 1, report.output
    document = json.loads(report.stdout)
    assert {j["id"]: (j["action"], j["problems"]) for j in document["jobs"]} == {
        JOB: ("skip", ["not_a_file"]),
        OTHER: ("unchanged", []),
    }
    assert "OK" not in cli("report", data, "--offline").stdout


# -- inside a job's folders: a warning, and the entry skipped -------------------------------


def test_a_fifo_named_input_csv_is_skipped_with_a_warning_and_the_job_written(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any]
) -> None:
    write_job(data, JOB, input_file=f"data/uploads/{JOB}/input.csv")
    (data / "uploads" / JOB).mkdir()
    os.mkfifo(data / "uploads" / JOB / "input.csv")
    age_tree(data)

    result = cli("backfill", data, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "special_file_skipped 1" in " ".join(result.stdout.split())
    assert conn.execute("SELECT count(*) FROM job_files").fetchone() == (0,)
    report = json.loads(cli("report", data, "--dsn", dsn, "--format", "json").stdout)
    assert [(p["code"], p["path"]) for p in report["problems"]] == [
        ("special_file_skipped", f"uploads/{JOB}/input.csv")
    ]
    assert report["jobs"] == [
        {"id": JOB, "action": "unchanged", "problems": ["special_file_skipped"]}
    ]


def test_fifos_sockets_and_devices_at_any_depth_of_a_jobs_folders_are_skipped(
    data: Path,
) -> None:
    write_job(data, JOB)
    out = data / "outputs" / JOB
    (out / "sub" / "deeper").mkdir(parents=True)
    (out / "sub" / "deeper" / "causes.csv").write_text("cause,n\n")
    os.mkfifo(out / "pipe")
    make_device(out / "sub" / "null")
    (data / "uploads" / JOB).mkdir()
    (data / "uploads" / JOB / "input.csv").write_text("ID\n1\n")

    with unix_socket(data / "uploads" / JOB / "sock"):
        [source] = [i for i in scan(data) if isinstance(i, JobSource)]

    assert [f.file_path for f in source.files] == [
        f"uploads/{JOB}/input.csv",
        f"outputs/{JOB}/sub/deeper/causes.csv",
    ]
    assert sorted((p.code, p.path, p.message) for p in source.problems) == [
        ("special_file_skipped", f"outputs/{JOB}/pipe", "a named pipe (FIFO), not a file; skipped"),
        (
            "special_file_skipped",
            f"outputs/{JOB}/sub/null",
            "a character device, not a file; skipped",
        ),
        ("special_file_skipped", f"uploads/{JOB}/sock", "a socket, not a file; skipped"),
    ]


# -- the daemon ------------------------------------------------------------------------------


def test_the_daemon_reports_odd_files_and_syncs_the_rest(dsn: str, data: Path) -> None:
    write_job(data, OTHER)
    with running_daemon(dsn, data) as daemon:
        (data / "outputs" / OTHER).mkdir()
        (data / "outputs" / OTHER / "causes.csv").write_text("cause,n\n")
        os.mkfifo(data / "outputs" / OTHER / "pipe")
        os.mkfifo(data / "jobs" / f"{JOB}.json")

        wait_until(lambda: stored(dsn) >= {("not_a_file", f"jobs/{JOB}.json")})
        wait_until(lambda: stored(dsn) >= {("special_file_skipped", f"outputs/{OTHER}/pipe")})
        assert job_row(dsn, OTHER) is not None
        assert daemon.stats()["errors"] >= 1
    assert job_row(dsn, JOB) is None


def stored(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT code, path FROM comsa_migrate.daemon_problems").fetchall()
    return {(code, path) for code, path in rows}
