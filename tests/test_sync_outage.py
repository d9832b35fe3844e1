"""The sync daemon through a database outage, simulated by a proxy that cuts every connection.

The daemon reaches PostgreSQL through a TCP proxy the test controls. ``cut()`` closes
every connection and refuses new ones, which is what the daemon sees when the server is
stopped; ``restore()`` is the server coming back. The shared server itself keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import (
    TcpProxy,
    file_rows,
    job_row,
    make_empty_tree,
    new_job_id,
    running_daemon,
    wait_until,
    write_job_atomically,
)


@pytest.fixture
def proxy(dsn: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(dsn)
    yield proxy
    proxy.close()


def test_files_that_arrive_while_the_database_is_down_all_land_once_it_is_back(
    dsn: str, proxy: TcpProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comsa_migrate.sync")
    data = make_empty_tree(tmp_path)
    first, second, third = new_job_id(), new_job_id(), new_job_id()
    with running_daemon(proxy.dsn, data) as daemon:
        write_job_atomically(data, first)
        wait_until(lambda: job_row(dsn, first), what="the first job")

        proxy.cut()
        wait_until(lambda: not daemon.database_up, what="the daemon to notice the outage")
        write_job_atomically(data, second, status="running")
        write_job_atomically(data, second, status="completed")  # the same job twice: pending once
        write_job_atomically(data, third)
        (data / "outputs" / first).mkdir()
        (data / "outputs" / first / "causes.csv").write_text("x\n")
        wait_until(lambda: daemon.queue_depth == 3, what="three jobs pending")
        assert job_row(dsn, second) is None

        proxy.restore()

        wait_until(lambda: job_row(dsn, second) and job_row(dsn, third), what="the jobs")
        wait_until(lambda: file_rows(dsn, first), what="the new output file's row")
        assert job_row(dsn, second) == (second, "completed", "Mozambique")
        assert daemon.stats()["outages"] == 1
    assert caplog.text.count("the database is unavailable") == 1
    assert caplog.text.count("the database is back") == 1


def test_a_daemon_started_while_the_database_is_down_waits_for_it(
    dsn: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    data = make_empty_tree(tmp_path)
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    proxy.cut()
    with running_daemon(proxy.dsn, data, ready=False) as daemon:
        wait_until(lambda: daemon.stats()["outages"] == 1, what="the first failed attempt")
        assert not daemon.ready.is_set()

        proxy.restore()

        wait_until(daemon.ready.is_set, what="the catch-up scan")
        assert job_row(dsn, job_id) is not None
