"""`comsa-migrate sync` and `status` from the command line: signals, the lock, logs, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.sync.lock import default_name, holder

from .helpers import (
    job_row,
    new_job_id,
    running_daemon,
    wait_until,
    write_job_atomically,
)


class DaemonProcess:
    """`comsa-migrate sync` in a subprocess, its stderr read line by line as it comes."""

    def __init__(self, data: Path, dsn: str, *args: str) -> None:
        command = [sys.executable, "-m", "comsa_migrate", "sync", str(data), "--dsn", dsn]
        env = {k: v for k, v in os.environ.items() if k not in ("COMSA_DSN", "DATABASE_URL")}
        self.process = subprocess.Popen(
            [*command, "--debounce", "0.05", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="test-stderr-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 15.0) -> str:
        def found() -> str | None:
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"the daemon exited early: {self.stderr}")
            return next((line for line in self.lines if text in line), None)

        return wait_until(found, timeout, f"{text!r} on stderr")

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(10)
        self._reader.join(5)
        return code


@pytest.fixture
def daemon_process(data: Path, dsn: str) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        started.append(DaemonProcess(data, dsn, *args))
        return started[-1]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_exits_0_within_5_s_with_nothing_half_done(
    data: Path, dsn: str, daemon_process: Any, cli: Any, signum: int
) -> None:
    daemon = daemon_process()
    daemon.wait_for_line("watching")
    ids = [new_job_id() for _ in range(60)]
    for job_id in ids:
        write_job_atomically(data, job_id)
    wait_until(lambda: job_row(dsn, ids[0]), what="the first job")

    sent = time.monotonic()
    daemon.process.send_signal(signum)
    code = daemon.process.wait(10)
    elapsed = time.monotonic() - sent

    assert code == 0, daemon.stderr
    assert elapsed < 5
    assert "Traceback" not in daemon.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        state = conn.execute("SELECT state, stopped_at IS NOT NULL FROM comsa_migrate.daemons")
        assert state.fetchall() == [("stopped", True)]
        assert holder(conn, default_name(data)) is None  # the lease was let go
    # every job the daemon wrote is whole: a backfill finds each one unchanged or new
    result = cli("backfill", data, "--dsn", dsn)
    assert result.exit_code == 0, result.output
    assert ", 0 updated," in result.stdout
    assert ", 0 conflicts" in result.stdout


def test_a_second_daemon_is_refused_by_the_lock_with_exit_code_3_naming_the_holder(
    data: Path, dsn: str, cli: Any
) -> None:
    with running_daemon(dsn, data):
        result = cli("sync", data, "--dsn", dsn)

    assert result.exit_code == 3
    assert f"another sync daemon named {default_name(data)} holds its lock" in result.stderr
    assert f"comsa-migrate sync pid={os.getpid()}" in result.stderr
    assert "start with --wait to wait for it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_with_wait_a_second_daemon_takes_over_when_the_first_stops(
    data: Path, dsn: str, daemon_process: Any
) -> None:
    first = daemon_process()
    first.wait_for_line("watching")
    second = daemon_process("--wait")
    second.wait_for_line("waiting for it")

    assert first.stop() == 0
    second.wait_for_line("took the lock")
    second.wait_for_line("watching")
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    wait_until(lambda: job_row(dsn, job_id), what="the second daemon to sync")
    assert second.stop() == 0


def test_sighup_triggers_a_full_rescan(data: Path, dsn: str, daemon_process: Any) -> None:
    daemon = daemon_process()
    daemon.wait_for_line("rescan (start-up)")

    daemon.process.send_signal(signal.SIGHUP)

    daemon.wait_for_line("rescan (SIGHUP)")
    assert daemon.stop() == 0


def test_log_format_json_gives_one_object_per_line_with_the_job_fields(
    data: Path, dsn: str, daemon_process: Any
) -> None:
    daemon = daemon_process("--log-format", "json")
    daemon.wait_for_line("watching")
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    line = daemon.wait_for_line(f'"job_id":"{job_id}"')
    assert daemon.stop() == 0

    record = json.loads(line)
    assert record["action"] == "insert"
    assert isinstance(record["ms"], int)
    assert record["message"] == f"{job_id} insert {record['ms']} ms"
    assert all(json.loads(text) for text in daemon.lines)


def test_text_log_has_one_line_per_synced_job(data: Path, dsn: str, daemon_process: Any) -> None:
    daemon = daemon_process()
    daemon.wait_for_line("watching")
    job_id = new_job_id()
    write_job_atomically(data, job_id)

    line = daemon.wait_for_line(f"{job_id} insert ")

    assert line.endswith(" ms")
    assert daemon.stop() == 0


def test_status_shows_the_last_sync_job_counts_lag_and_problems(
    data: Path, dsn: str, cli: Any
) -> None:
    job_id = new_job_id()
    (data / "jobs" / f"{new_job_id()}.json").write_text("[1, 2]")
    with running_daemon(dsn, data):
        write_job_atomically(data, job_id)
        wait_until(lambda: job_row(dsn, job_id))

        def status_after_sync() -> Any:
            result = cli("status", "--dsn", dsn)
            return result if job_id in result.stdout else None

        result = wait_until(status_after_sync, what="the heartbeat that records the sync")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert os.path.realpath(data) in out
    assert "running, watching" in out
    assert f": {job_id} insert, " in out
    assert "ms after its first event" in out
    assert "lag         nothing waiting" in out
    assert "jobs        1 inserted, 0 updated, 0 unchanged, 1 skipped, 0 conflicts" in out
    assert "error   not_an_object" in out


def test_status_says_so_when_no_daemon_ever_ran(empty_dsn: str, cli: Any) -> None:
    result = cli("status", "--dsn", empty_dsn)

    assert result.exit_code == 0
    assert result.stdout.startswith("No sync daemon has run against ")


def test_status_shows_a_stopped_daemon_as_stopped(data: Path, dsn: str, cli: Any) -> None:
    with running_daemon(dsn, data):
        pass

    result = cli("status", "--dsn", dsn)

    assert "state       stopped at " in result.stdout


def test_status_says_a_daemon_killed_with_sigkill_stopped_without_a_heartbeat_line(
    data: Path, dsn: str, daemon_process: Any, cli: Any
) -> None:
    daemon = daemon_process()
    daemon.wait_for_line("watching")
    assert "state       running, watching" in cli("status", "--dsn", dsn).stdout

    daemon.process.kill()
    daemon.process.wait(5)
    result = cli("status", "--dsn", dsn)

    assert result.exit_code == 0, result.output
    state = "    state       stopped: its process is gone, killed or crashed (last heartbeat "
    assert any(line.startswith(state) for line in result.stdout.splitlines()), result.stdout
    assert "    heartbeat   " not in result.stdout
    assert f"pid {daemon.process.pid} on " in result.stdout


def test_a_metrics_port_already_taken_is_one_line_and_exit_2(
    data: Path, dsn: str, cli: Any
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("sync", data, "--dsn", dsn, "--metrics-port", str(port))

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"comsa-migrate: error: --metrics-port {port}: address already in use on 127.0.0.1"
    ]
