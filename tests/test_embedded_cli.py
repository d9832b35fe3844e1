"""`comsa-migrate embedded`: dsn, run, path and reset, on real embedded servers each in a
home of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from comsa_migrate.cli import main
from comsa_migrate.db.embedded import release_embedded
from comsa_migrate.db.target import embedded_bin_dir
from comsa_migrate.errors import EXIT_CANNOT_RUN, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE

from .embedded_helpers import embedded_env, embedded_home, handles, server_pid
from .helpers import wait_until

pytestmark = pytest.mark.slow  # each test starts a server, most make one with initdb

COMMAND = [sys.executable, "-m", "comsa_migrate"]
#: a program that writes its environment as JSON to the file it is given
DUMP_ENV = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
#: a program that says it runs (a file) and waits for its stdin to close
HOLD = "import sys; open(sys.argv[1], 'w').close(); sys.stdin.read()"


def answering(answer: str, *args: str, env: dict[str, str]) -> Result:
    """comsa-migrate ARGS in-process, with ``answer`` on its stdin."""
    return CliRunner().invoke(main, list(args), input=answer, env=env)


@pytest.fixture(scope="module")
def shared_home() -> Iterator[Path]:
    """A home whose server holds the sample's backfill, for the tests that only read it."""
    with embedded_home() as home:
        yield home


@pytest.fixture
def home() -> Iterator[Path]:
    with embedded_home() as made:
        yield made


@pytest.fixture
def in_home(cli: Any, shared_home: Path) -> Any:
    """comsa-migrate, in-process, on the shared home's server; this process holds it from
    the first command on, so it stays up between the tests."""

    def run(*args: str, env: dict[str, str] | None = None) -> Any:
        return cli(*args, env={"COMSA_MIGRATE_HOME": str(shared_home), **(env or {})})

    return run


def test_path_says_where_everything_is_and_starts_nothing(cli: Any, home: Path) -> None:
    result = cli("embedded", "path", env={"COMSA_MIGRATE_HOME": str(home)})

    assert result.exit_code == EXIT_OK == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"data        {home.resolve() / 'pgdata'}",
        "            none yet: the first command on the embedded server makes it",
        f"programs    {embedded_bin_dir()}",
    ]
    assert lines[3].startswith("            PostgreSQL 18.")
    assert lines[4] == (
        "server      not running (a command on it starts it, and stops it as it ends)"
    )
    assert "remove it   comsa-migrate embedded reset" in result.stdout
    assert not (home / "pgdata").exists()


def test_path_shows_the_data_its_size_and_the_running_server_with_its_users(
    in_home: Any, sample_tree: Path, shared_home: Path
) -> None:
    assert in_home("backfill", sample_tree, "--quiet").exit_code == 0

    result = in_home("embedded", "path")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].endswith(" MiB, PostgreSQL 18")
    pid = server_pid(shared_home / "pgdata")
    socket = shared_home.resolve() / "pgdata" / ".s.PGSQL.5432"
    assert lines[4] == (
        f"server      running, pid {pid}, socket {socket}; used by process {os.getpid()}"
    )


def test_dsn_prints_a_dsn_that_connects_while_the_server_runs(in_home: Any) -> None:
    result = in_home("embedded", "dsn")

    assert result.exit_code == 0, result.output
    dsn = result.stdout.strip()
    assert dsn.startswith("postgresql://postgres@/comsa_dashboard?host=")
    assert "comsa-migrate embedded run -- PROGRAM" in result.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("comsa_dashboard",)


def test_run_gives_the_program_the_servers_programs_libpq_variables_and_the_dsn(
    in_home: Any, tmp_path: Path
) -> None:
    dsn = in_home("embedded", "dsn").stdout.strip()
    seen = tmp_path / "env.json"

    result = in_home(
        "embedded", "run", "--", sys.executable, "-c", DUMP_ENV, seen,
        env={"PGAPPNAME": "elsewhere", "PGSSLMODE": "disable", "DATABASE_URL": "x"},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    env = json.loads(seen.read_text())
    assert env["PATH"].split(os.pathsep)[0] == str(embedded_bin_dir())
    assert env["COMSA_DSN"] == env["DATABASE_URL"] == dsn
    assert {k: v for k, v in env.items() if k.startswith("PG")} == {
        "PGHOST": str(psycopg.conninfo.conninfo_to_dict(dsn)["host"]),
        "PGPORT": "5432",
        "PGUSER": "postgres",
        "PGDATABASE": "comsa_dashboard",
    }


def test_run_pg_dump_dumps_the_embedded_database_with_its_own_pg_dump(
    in_home: Any, sample_tree: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert in_home("backfill", sample_tree, "--quiet").exit_code == 0
    dump = tmp_path / "comsa_dashboard.sql"

    version = in_home("embedded", "run", "pg_dump", "--version")
    result = in_home("embedded", "run", "--", "pg_dump", "-f", dump)

    assert version.exit_code == 0 and result.exit_code == 0, result.output
    assert "pg_dump (PostgreSQL) 18." in capfd.readouterr().out
    assert "CREATE TABLE public.jobs" in dump.read_text()


@pytest.mark.parametrize(
    ("program", "code"),
    [("exit 3", 3), ("exit 0", 0), ("kill -TERM $$", 128 + signal.SIGTERM)],
    ids=["exit-3", "exit-0", "killed-by-SIGTERM"],
)
def test_run_exits_with_the_programs_code(in_home: Any, program: str, code: int) -> None:
    result = in_home("embedded", "run", "--", "sh", "-c", program)

    assert result.exit_code == code, result.output


def test_run_of_a_program_that_does_not_exist_is_one_line_and_exit_127(in_home: Any) -> None:
    result = in_home("embedded", "run", "--", "no-such-program-here", "--flag")

    assert result.exit_code == EXIT_CANNOT_RUN == 127
    assert result.stderr == (
        "comsa-migrate: error: no-such-program-here: no such program "
        "(looked in the embedded server's bin folder, then PATH)\n"
    )


def test_run_without_a_program_is_a_usage_error(in_home: Any) -> None:
    result = in_home("embedded", "run")

    assert result.exit_code == EXIT_USAGE == 2
    assert "Missing argument 'PROGRAM...'" in result.stderr


def test_dsn_in_a_process_of_its_own_leaves_no_server_running(home: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "embedded", "dsn"],
        env=embedded_env(home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    wait_until(lambda: server_pid(home / "pgdata") is None, 10, "the server to stop")


def test_reset_asks_and_a_no_removes_nothing(cli: Any, home: Path) -> None:
    env = {"COMSA_MIGRATE_HOME": str(home)}
    assert cli("embedded", "dsn", env=env).exit_code == 0
    release_embedded(home)

    result = answering("n\n", "embedded", "reset", env=env)

    assert result.exit_code == EXIT_SKIPPED == 1
    assert "with every job migrated into it? [y/N]" in result.stderr
    assert result.stderr.endswith("comsa-migrate: nothing removed\n")
    assert (home / "pgdata" / "PG_VERSION").is_file()


def test_reset_yes_stops_the_server_and_removes_the_data(cli: Any, home: Path) -> None:
    env = {"COMSA_MIGRATE_HOME": str(home)}
    assert cli("embedded", "dsn", env=env).exit_code == 0
    running = server_pid(home / "pgdata")

    result = answering("y\n", "embedded", "reset", env=env)

    assert result.exit_code == 0, result.output
    pgdata = home.resolve() / "pgdata"
    assert result.stdout.splitlines()[0] == f"stopped the embedded PostgreSQL (pid {running})"
    assert result.stdout.splitlines()[1].startswith(f"removed {pgdata} (")
    assert not pgdata.exists()
    again = cli("embedded", "reset", "--yes", env=env)
    assert again.exit_code == 0
    assert again.stdout == f"nothing to remove: {pgdata} does not exist\n"


def test_reset_is_refused_while_another_process_uses_the_server_which_stops_after_it(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    holder = subprocess.Popen(
        [*COMMAND, "embedded", "run", "--", sys.executable, "-c", HOLD, str(started)],
        env=embedded_env(home), stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(started.exists, 120, "the program to run beside the server")

        result = cli("embedded", "reset", "--yes", env={"COMSA_MIGRATE_HOME": str(home)})

        assert result.exit_code == EXIT_USAGE == 2
        assert result.stderr == (
            f"comsa-migrate: error: the embedded PostgreSQL in {home.resolve() / 'pgdata'} "
            f"is in use by process {holder.pid}; stop it first (nothing was removed)\n"
        )
        assert server_pid(home / "pgdata") is not None
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(60) == 0
        wait_until(lambda: server_pid(home / "pgdata") is None, 10, "the server to stop")
        assert handles(home / "pgdata") == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_sigterm_to_run_goes_to_the_program_and_the_server_stops_after_it(
    home: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    holder = subprocess.Popen(
        [*COMMAND, "embedded", "run", "--", sys.executable, "-c", HOLD, str(started)],
        env=embedded_env(home), stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(started.exists, 120, "the program to run beside the server")
        holder.send_signal(signal.SIGTERM)

        assert holder.wait(60) == 128 + signal.SIGTERM
        wait_until(lambda: server_pid(home / "pgdata") is None, 10, "the server to stop")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
