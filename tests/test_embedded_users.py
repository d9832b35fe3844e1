"""The embedded server stops with its last live user, even after a user was killed: the
handles of processes that are gone (or whose pid another process now has) are dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from comsa_migrate.db.embedded_users import HANDLES_FILE, USERS_FILE, live_users

from .conftest import copy_fixture
from .embedded_helpers import embedded_env, embedded_home, handles, ready_dsn, server_pid
from .helpers import jobs_written, wait_until

COMMAND = [sys.executable, "-m", "comsa_migrate"]


@pytest.fixture
def home() -> Iterator[Path]:
    with embedded_home() as made:
        yield made


@pytest.mark.slow
def test_after_a_killed_daemon_no_server_runs_once_the_next_command_ends(
    tmp_path: Path, home: Path
) -> None:
    pgdata = home / "pgdata"
    data = copy_fixture("legacy-sample", tmp_path)
    env = embedded_env(home)
    log = tmp_path / "sync.log"
    with log.open("w") as stderr:
        daemon = subprocess.Popen(
            [*COMMAND, "sync", str(data)],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    def synced() -> bool:
        assert daemon.poll() is None, log.read_text()
        dsn = ready_dsn(pgdata)
        return dsn is not None and jobs_written(dsn) == 11

    try:
        wait_until(synced, 120, "the daemon to start the server and sync the sample")
        server = server_pid(pgdata)
        assert daemon.pid in handles(pgdata)
        daemon.kill()
        daemon.wait(10)
        assert daemon.pid in handles(pgdata) and server_pid(pgdata) == server

        backfill = subprocess.run(
            [*COMMAND, "backfill", str(data), "--quiet"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        ended = time.monotonic()

        assert backfill.returncode == 0, backfill.stderr
        wait_until(lambda: server_pid(pgdata) is None, 10, "the server to stop")
        assert time.monotonic() - ended < 10
        assert handles(pgdata) == []
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)


def test_the_handles_of_processes_that_are_gone_are_dropped(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), gone.pid]))

    assert live_users(tmp_path) == [os.getpid()]
    assert handles(tmp_path) == [os.getpid()]


def test_a_pid_now_held_by_a_process_started_at_another_time_is_dropped(tmp_path: Path) -> None:
    """The pid was recorded with a start time: a process with that pid and another start
    time took it over after the user was gone."""
    own = psutil.Process().create_time()
    (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), os.getppid()]))
    (tmp_path / USERS_FILE).write_text(
        json.dumps({str(os.getpid()): own, str(os.getppid()): own + 3600})
    )

    assert live_users(tmp_path) == [os.getpid()]
    assert json.loads((tmp_path / USERS_FILE).read_text()) == {str(os.getpid()): own}


def test_an_unrecorded_pid_counts_only_if_its_process_is_older_than_the_list(
    tmp_path: Path,
) -> None:
    """A pid some other program listed is believed while its process started before the
    list last changed: one started later cannot be the process that took the handle."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = wait_until(lambda: psutil.Process(other.pid).create_time(), 10, "a start")
        listed = tmp_path / HANDLES_FILE
        listed.write_text(json.dumps([other.pid]))
        assert live_users(tmp_path) == [other.pid]

        os.utime(listed, (started - 60, started - 60))
        assert live_users(tmp_path) == []
    finally:
        other.kill()
        other.wait()
