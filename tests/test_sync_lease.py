"""The sync daemon's lease (comsa_migrate.daemon_leases): one daemon per name, renewed while
it runs, let go when it stops, waited out when its holder died elsewhere and taken over at
once when its holder's process is gone from this host."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.errors import EXIT_LOCKED, LockHeld
from comsa_migrate.sync.lock import Process, holder, lock_key

from .conftest import FIXTURES
from .helpers import (
    held_jobs,
    job_row,
    make_empty_tree,
    new_job_id,
    running_daemon,
    wait_until,
    write_job_atomically,
)
from .test_sync_cli import DaemonProcess


def plant_lease(dsn: str, name: str, process: Process, expires_in: float) -> None:
    """A lease of ``name`` as ``process`` would hold it, expiring ``expires_in`` s from now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO comsa_migrate.daemon_leases"
            " (name, token, hostname, pid, pid_start, host_scope, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
            " hostname = excluded.hostname, pid = excluded.pid, pid_start = excluded.pid_start,"
            " host_scope = excluded.host_scope, expires_at = excluded.expires_at",
            [
                name,
                process.token,
                process.hostname,
                process.pid,
                process.pid_start,
                process.host_scope,
                expires_in,
            ],
        )


def lease_row(dsn: str, name: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT token, pid, acquired_at, expires_at FROM comsa_migrate.daemon_leases"
            " WHERE name = %s",
            [name],
        ).fetchone()


def elsewhere(pid: int = 4242) -> Process:
    """A daemon process on another host."""
    return Process(uuid.uuid4(), "web2", pid, 1234, "boot other, pid namespace 1")


def test_the_lease_is_taken_at_start_renewed_while_running_and_let_go_at_stop(
    dsn: str, data: Path
) -> None:
    with running_daemon(dsn, data, name="web1", lease_ttl=2.0):
        token, pid, _, first_expiry = lease_row(dsn, "web1") or ()
        assert pid == os.getpid()
        wait_until(
            lambda: (row := lease_row(dsn, "web1")) and row[3] > first_expiry,
            what="the lease to be renewed",
        )
        assert lease_row(dsn, "web1")[0] == token  # type: ignore[index]

    assert lease_row(dsn, "web1") is None


def test_the_lease_outlives_its_ttl_while_the_catch_up_waits_on_a_job(
    dsn: str, tmp_path: Path
) -> None:
    data = make_empty_tree(tmp_path)
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    with (
        held_jobs(dsn, [job_id]) as held,
        running_daemon(dsn, data, name="web1", lease_ttl=1.0, ready=False) as daemon,
    ):
        held.wait_for_a_writer()
        token, _, _, expiry = lease_row(dsn, "web1") or ()
        wait_until(
            lambda: (row := lease_row(dsn, "web1")) and (row[3] - expiry).total_seconds() > 2,
            what="renewals for twice the lease's TTL",
        )
        assert lease_row(dsn, "web1")[0] == token  # type: ignore[index]
        assert not daemon.ready.is_set()
        held.release()
        wait_until(daemon.ready.is_set, what="the catch-up once the job is free")
    assert job_row(dsn, job_id) is not None


def test_a_lease_held_on_another_host_refuses_a_start_and_is_waited_out_with_wait(
    dsn: str, data: Path, cli: Any
) -> None:
    plant_lease(dsn, "web1", elsewhere(), expires_in=3)
    _, _, _, expiry = lease_row(dsn, "web1") or ()

    refused = cli("sync", data, "--dsn", dsn, "--name", "web1")
    with running_daemon(dsn, data, name="web1", wait=True, ready=False) as standby:
        wait_until(standby.ready.is_set, what="the standby to take the expired lease")
        _, pid, acquired, _ = lease_row(dsn, "web1") or ()

    assert refused.exit_code == EXIT_LOCKED
    assert "another sync daemon named web1 holds its lock" in refused.stderr
    assert "comsa-migrate sync pid=4242 host=web2, holding it since " in refused.stderr
    assert pid == os.getpid()
    assert acquired >= expiry  # not before the lease of the other host expired


@pytest.mark.parametrize(
    ("reused", "taken_over"),
    [(True, True), (False, False)],
    ids=["a pid now another process's", "a live process"],
)
def test_a_holder_on_this_host_is_taken_over_at_once_only_when_its_process_is_gone(
    dsn: str, data: Path, cli: Any, reused: bool, taken_over: bool
) -> None:
    me = Process.this_one()
    started = me.pid_start + 1 if reused and me.pid_start is not None else me.pid_start
    plant_lease(dsn, "web1", Process(uuid.uuid4(), me.hostname, me.pid, started, me.host_scope), 60)

    if taken_over:
        with running_daemon(dsn, data, name="web1"):
            assert lease_row(dsn, "web1")[1] == os.getpid()  # type: ignore[index]
    else:
        result = cli("sync", data, "--dsn", dsn, "--name", "web1")
        assert result.exit_code == EXIT_LOCKED
        assert f"comsa-migrate sync pid={me.pid} host={me.hostname}" in result.stderr


@pytest.mark.slow
def test_a_daemon_restarted_after_sigkill_takes_its_lease_over_without_waiting_for_the_ttl(
    dsn: str, data: Path
) -> None:
    first = DaemonProcess(data, dsn, "--name", "web1")
    first.wait_for_line("watching")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    killed = time.monotonic()

    second = DaemonProcess(data, dsn, "--name", "web1")
    try:
        second.wait_for_line("watching")
        waited = time.monotonic() - killed
        took_over = second.wait_for_line("took over the lock for web1")
    finally:
        assert second.stop() == 0

    assert waited < 10  # the lease lasts 30 s
    assert f"pid={first.process.pid}" in took_over


def test_a_daemon_that_loses_its_lease_stops_writing_and_exits_3(dsn: str, data: Path) -> None:
    job_id = new_job_id()
    with pytest.raises(LockHeld) as stopped, running_daemon(dsn, data, name="web1") as daemon:
        plant_lease(dsn, "web1", elsewhere(), expires_in=60)
        wait_until(lambda: daemon.state == "stopped", what="the daemon to stop")
        write_job_atomically(data, job_id)

    assert stopped.value.exit_code == EXIT_LOCKED
    assert str(stopped.value).startswith("the sync daemon named web1 lost its lock on ")
    assert "to comsa-migrate sync pid=4242 host=web2" in str(stopped.value)
    assert job_row(dsn, job_id) is None


def test_with_wait_a_daemon_that_loses_its_lease_waits_and_syncs_again_once_it_is_free(
    dsn: str, data: Path, cli: Any
) -> None:
    job_id = new_job_id()
    with running_daemon(dsn, data, name="web1", wait=True) as daemon:
        plant_lease(dsn, "web1", elsewhere(), expires_in=60)
        wait_until(lambda: not daemon.database_up, what="the daemon to stop writing")
        write_job_atomically(data, job_id)
        wait_until(lambda: daemon.queue_depth == 1, what="the job to wait")
        assert job_row(dsn, job_id) is None

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM comsa_migrate.daemon_leases")  # the other one stops
        wait_until(lambda: job_row(dsn, job_id), what="the job once the lease is taken again")
        status = wait_until(
            lambda: (
                (found := cli("status", "--dsn", dsn)).stdout.count("running, watching") and found
            ),
            what="status to show the daemon running again",
        )

    assert status.stdout.count("running, watching") == 1
    assert status.stdout.count("    name        web1") == 2  # registered again


def test_a_daemon_of_an_earlier_version_holding_its_advisory_lock_refuses_a_start(
    dsn: str, data: Path, cli: Any
) -> None:
    with psycopg.connect(dsn, autocommit=True) as earlier:
        earlier.execute("SELECT pg_advisory_lock(%s)", [lock_key("web1")])
        result = cli("sync", data, "--dsn", dsn, "--name", "web1")
        server_pid = earlier.info.backend_pid

    assert result.exit_code == EXIT_LOCKED
    assert f"server pid {server_pid} (an earlier version)" in result.stderr


def test_a_database_of_the_last_release_gets_the_lease_table_and_a_daemon_holds_it(
    empty_dsn: str, sample_tree: Path, cli: Any
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "upgrade" / "comsa-migrate-0.2.0.sql").read_text().encode())

    with running_daemon(empty_dsn, sample_tree, name="fixture-daemon") as daemon:
        second = cli("sync", sample_tree, "--dsn", empty_dsn, "--name", "fixture-daemon")
        status = cli("status", "--dsn", empty_dsn)
        stats = daemon.stats()

    # job_files carry the files' times, which a checkout of the sample sets anew
    assert stats.get("update", 0) + stats.get("unchanged", 0) == 11, stats
    assert stats.get("conflict", 0) == 0
    assert second.exit_code == EXIT_LOCKED
    assert "another sync daemon named fixture-daemon holds its lock" in second.stderr
    daemons = status.stdout.split("\n  daemon ")[1:]
    assert [block.split()[0] for block in daemons] == ["2", "1"]
    assert "running, watching" in daemons[0]
    assert "state       stopped at 2026-12-06 03:39:38 UTC" in daemons[1]
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert holder(conn, "fixture-daemon") is None
        versions = conn.execute("SELECT version FROM comsa_migrate.schema_migrations")
        assert 6 in [v for (v,) in versions.fetchall()]  # 006_daemon_lease
