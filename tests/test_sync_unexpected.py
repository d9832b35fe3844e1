"""No unexpected exception ends the sync daemon: it is logged with its traceback, counted,
and the daemon goes on syncing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comsa_migrate.core import tree
from comsa_migrate.sync import bookkeeping, job_syncer

from .helpers import (
    job_row,
    new_job_id,
    running_daemon,
    wait_until,
    write_job_atomically,
)

# watchdog warns, from its own thread, when it adds again the watch of a folder made with
# its parents (mkdir -p) in one go; harmless, and the daemon's CLI silences it too
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def failing(original: Callable[..., Any], when: Callable[..., bool]) -> Callable[..., Any]:
    """``original``, raising a RuntimeError on the calls for which ``when`` is true."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise RuntimeError("a bug, for the test")
        return original(*args, **kwargs)

    return call


def tracebacks(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if message in r.getMessage() and r.exc_info]


def test_an_error_in_the_loop_is_logged_counted_and_the_daemon_goes_on(
    dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def once(*args: Any) -> bool:
        calls.append(1)
        return len(calls) == 2

    monkeypatch.setattr(bookkeeping, "heartbeat", failing(bookkeeping.heartbeat, once))
    job_id = new_job_id()
    with running_daemon(dsn, data) as daemon:
        wait_until(lambda: tracebacks(caplog, "unexpected error in the sync loop"))
        write_job_atomically(data, job_id)

        wait_until(lambda: job_row(dsn, job_id), what="the job, after the error")
        assert daemon.stats()["errors"] == 1


def test_a_rescan_that_fails_is_logged_and_the_daemon_goes_on(
    dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_scan = tree.scan
    broken = {"on": False}
    monkeypatch.setattr(tree, "scan", failing(real_scan, lambda *a, **kw: broken["on"]))
    job_id = new_job_id()
    with running_daemon(dsn, data) as daemon:
        broken["on"] = True
        daemon.request_rescan()
        wait_until(lambda: tracebacks(caplog, "rescan (requested) failed"))
        write_job_atomically(data, job_id)

        wait_until(lambda: job_row(dsn, job_id), what="the job, after the failed rescan")
        assert daemon.stats()["errors"] == 1


def test_a_job_that_meets_a_bug_does_not_stop_the_others(
    dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = new_job_id(), new_job_id()
    monkeypatch.setattr(
        tree, "scan_job", failing(tree.scan_job, lambda _data, job_id, **kw: job_id == bad)
    )
    with running_daemon(dsn, data, debounce=0.2) as daemon:
        write_job_atomically(data, bad)
        write_job_atomically(data, good)

        wait_until(lambda: job_row(dsn, good), what="the good job")
        wait_until(lambda: tracebacks(caplog, f"{bad}: unexpected error"))
        assert daemon.stats()["errors"] >= 1
    assert job_row(dsn, bad) is None


def test_a_bug_while_writing_a_batch_is_narrowed_to_its_job(
    dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [new_job_id() for _ in range(3)]
    real = job_syncer.run_batches

    def run_batches(
        conn: Any, options: Any, reading: Any, items: Any, *args: Any, **kw: Any
    ) -> bool:
        if any(getattr(item, "job_id", None) == ids[1] for item in items):
            raise RuntimeError("a bug, for the test")
        return real(conn, options, reading, items, *args, **kw)

    monkeypatch.setattr(job_syncer, "run_batches", run_batches)
    with running_daemon(dsn, data, debounce=0.3):
        for job_id in ids:
            write_job_atomically(data, job_id)

        for job_id in (ids[0], ids[2]):
            wait_until(lambda job_id=job_id: job_row(dsn, job_id), what="the other jobs")
        wait_until(lambda: tracebacks(caplog, f"{ids[1]}: unexpected error while syncing"))
    assert job_row(dsn, ids[1]) is None
