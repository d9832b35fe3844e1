"""Which database: DSN precedence, .env, the embedded default, and failures without secrets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.db.target import (
    DEFAULT_CONNECT_TIMEOUT,
    Target,
    connect,
    embedded_bin_dir,
    embedded_home,
    redact,
    resolve_target,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_dsn_option_wins_over_every_environment_setting(tmp_path: Path) -> None:
    env = {"COMSA_DSN": "dbname=a", "DATABASE_URL": "dbname=b", "PGHOST": "c"}
    target = resolve_target("dbname=opt", env, tmp_path / ".env")
    assert target is not None and (target.dsn, target.source) == ("dbname=opt", "--dsn")


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ({"COMSA_DSN": "dbname=a", "DATABASE_URL": "dbname=b", "PGHOST": "c"}, "COMSA_DSN"),
        ({"DATABASE_URL": "dbname=b", "PGHOST": "c"}, "DATABASE_URL"),
        ({"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "comsa"}, "PG* variables"),
    ],
)
def test_environment_settings_are_taken_in_order(
    tmp_path: Path, env: dict[str, str], source: str
) -> None:
    target = resolve_target(None, env, tmp_path / ".env")
    assert target is not None and target.source == source


def test_pg_variables_become_a_connection_string() -> None:
    target = resolve_target(None, {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "comsa"})
    assert target is not None
    assert str(target) == "comsa@db.example:6543/(default database)"


def test_a_dotenv_file_fills_in_what_the_environment_lacks(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PGHOST=from-dotenv\nPGDATABASE=comsa_dashboard\nPGPASSWORD=s3cret\n")

    from_file = resolve_target(None, {}, dotenv)
    overridden = resolve_target(None, {"DATABASE_URL": "dbname=env"}, dotenv)

    assert from_file is not None and "host=from-dotenv" in from_file.dsn
    assert "s3cret" not in str(from_file)
    assert overridden is not None and overridden.dsn == "dbname=env"


def test_nothing_configured_means_the_embedded_server(tmp_path: Path) -> None:
    assert resolve_target(None, {"PGPASSWORD": "only-a-password"}, tmp_path / ".env") is None


def test_embedded_home_follows_comsa_migrate_home_then_xdg() -> None:
    assert embedded_home({"COMSA_MIGRATE_HOME": "/srv/cm"}) == Path("/srv/cm")
    assert embedded_home({"XDG_DATA_HOME": "/x"}) == Path("/x/comsa-migrate")


def test_redact_never_shows_a_password() -> None:
    assert redact("postgresql://comsa:hunter2@db:5433/comsa_dashboard") == (
        "comsa@db:5433/comsa_dashboard"
    )
    assert "hunter2" not in redact("host=db password=hunter2 user=comsa")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_one_line_without_the_password_and_exit_2(
    cli: Any, sample_tree: Path
) -> None:
    dsn = f"postgresql://comsa:hunter2@127.0.0.1:{_closed_port()}/comsa_dashboard"

    result = cli("backfill", sample_tree, "--dsn", dsn)

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("comsa-migrate: error: cannot connect to comsa@127.0.0.1:")
    assert "hunter2" not in result.output


def test_a_malformed_dsn_is_refused_without_echoing_it(cli: Any, sample_tree: Path) -> None:
    result = cli("backfill", sample_tree, "--dsn", "host=db password=hunter2 nonsense")

    assert result.exit_code == 2
    assert "--dsn is not a valid connection string" in result.stderr
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "missing", "no such folder"),
        (lambda tmp: _file(tmp / "a-file"), "not a folder"),
        (lambda tmp: _folder(tmp / "empty"), "not a legacy data folder"),
    ],
)
def test_a_bad_data_dir_is_one_clear_line_and_exit_2(
    cli: Any, dsn: str, tmp_path: Path, make_path: Any, message: str
) -> None:
    result = cli("backfill", make_path(tmp_path), "--dsn", dsn)

    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def _file(path: Path) -> Path:
    path.write_text("")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.slow
def test_the_readme_quick_start_runs_on_the_embedded_server_and_psql_sees_the_data(
    tmp_path: Path,
) -> None:
    """No database configured: backfill starts the embedded server; `psql` reads it back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "COMSA_"))}
    env.pop("DATABASE_URL", None)
    env["COMSA_MIGRATE_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "comsa_migrate"]
    try:
        backfill = subprocess.run(
            [*command, "backfill", str(FIXTURES / "legacy-sample" / "data")],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        psql = subprocess.run(
            [*command, "psql", "-At", "-c", "SELECT count(*) FROM job_logs"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        _stop_embedded(tmp_path / "home" / "pgdata")

    assert backfill.returncode == 0, backfill.stderr
    assert "using the embedded PostgreSQL in" in backfill.stderr
    assert "COMSA_DSN" in backfill.stderr
    assert "rows        jobs 11, job_logs 89, job_files 16" in backfill.stdout
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "89"


def _stop_embedded(pgdata: Path) -> None:
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(
            [str(embedded_bin_dir() / "pg_ctl"), "-D", str(pgdata), "stop",
             "-m", "fast"],
            capture_output=True,
            user="embedded_postgres" if os.geteuid() == 0 else None,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("in_dsn", "environ", "expected"),
    [
        ("3", None, "3"),
        (None, "4", "4"),
        ("3", "4", "3"),
        (None, None, str(DEFAULT_CONNECT_TIMEOUT)),
    ],
)
def test_connect_timeout_comes_from_the_dsn_then_pgconnect_timeout_then_the_default(
    admin_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    in_dsn: str | None,
    environ: str | None,
    expected: str,
) -> None:
    params = conninfo_to_dict(admin_dsn)
    if in_dsn is not None:
        params["connect_timeout"] = in_dsn
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    if environ is not None:
        monkeypatch.setenv("PGCONNECT_TIMEOUT", environ)

    with connect(Target(make_conninfo(**params), "--dsn")) as conn:
        used = conn.info.get_parameters().get("connect_timeout")

    assert used == expected


@pytest.mark.slow
def test_a_server_that_never_answers_gives_up_after_the_dsn_connect_timeout(
    cli: Any, sample_tree: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        dsn = f"postgresql://comsa@127.0.0.1:{port}/comsa_dashboard?connect_timeout=2"
        started = time.monotonic()
        result = cli("backfill", sample_tree, "--dsn", dsn)
        elapsed = time.monotonic() - started

    assert result.exit_code == 2
    assert "cannot connect to comsa@127.0.0.1:" in result.stderr
    assert elapsed < DEFAULT_CONNECT_TIMEOUT - 2, f"gave up after {elapsed:.1f} s"
