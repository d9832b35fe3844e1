"""Schema migrations: apply the SQL files in schema/ in order and record each one's checksum."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from .errors import SchemaError

__all__ = ["Migration", "MigrationResult", "migrate", "migrations", "pending_migrations"]

log = logging.getLogger(__name__)

BOOKKEEPING_SCHEMA = "comsa_migrate"
APP_TABLES = ("jobs", "job_logs", "job_files")
#: a fixed key for pg_advisory_xact_lock, so that two migrating processes take turns
_MIGRATION_LOCK = 0x636F6D7361_01

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS comsa_migrate;
CREATE TABLE IF NOT EXISTS comsa_migrate.schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    adopted BOOLEAN NOT NULL DEFAULT FALSE
)
"""
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.version:03d}_{self.name}.sql"


@dataclass(frozen=True, slots=True)
class MigrationResult:
    applied: tuple[str, ...]  # file names applied now
    adopted: tuple[str, ...]  # file names found already applied by hand, recorded now


def migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found = []
    for item in resources.files("comsa_migrate.sql").iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations not yet recorded, without changing anything (safe in a read-only transaction)."""
    recorded = _recorded(conn)
    return [m for m in migrations() if m.version not in recorded]


def migrate(conn: psycopg.Connection[Any]) -> MigrationResult:
    """Apply every pending migration in one transaction; idempotent.

    Tables that the dashboard created by hand from 001 are adopted, not re-created.
    A migration whose file changed after it was applied stops everything.
    """
    applied: list[str] = []
    adopted: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        conn.execute("SET LOCAL search_path = public")
        conn.execute(_BOOTSTRAP)
        recorded = _recorded(conn)
        known = {m.version for m in migrations()}
        newer = sorted(set(recorded) - known)
        if newer:
            raise SchemaError(
                f"the database has migration {newer[-1]:03d}, newer than this comsa-migrate "
                "knows: upgrade comsa-migrate"
            )
        for migration in migrations():
            if migration.version in recorded:
                _check_unchanged(migration, recorded[migration.version])
                continue
            if migration.version == 1 and _app_tables_exist(conn):
                adopted.append(migration.file_name)
            else:
                conn.execute(migration.sql.encode())
                applied.append(migration.file_name)
            conn.execute(
                "INSERT INTO comsa_migrate.schema_migrations (version, name, checksum, adopted)"
                " VALUES (%s, %s, %s, %s)",
                [
                    migration.version,
                    migration.name,
                    migration.checksum,
                    migration.file_name in adopted,
                ],
            )
    for name in applied:
        log.info("applied migration %s", name)
    for name in adopted:
        log.info("adopted existing tables for migration %s", name)
    return MigrationResult(tuple(applied), tuple(adopted))


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, str]:
    exists = conn.execute(
        "SELECT to_regclass('comsa_migrate.schema_migrations') IS NOT NULL"
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM comsa_migrate.schema_migrations")
    return {int(version): str(checksum) for version, checksum in rows.fetchall()}


def _check_unchanged(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise SchemaError(
            f"migration {migration.file_name} was changed after it was applied to this database "
            f"(recorded checksum {recorded_checksum[:12]}…, file {migration.checksum[:12]}…); "
            "restore the original file or migrate a fresh database"
        )


def _app_tables_exist(conn: psycopg.Connection[Any]) -> bool:
    """True when all three dashboard tables exist; a partial set cannot be adopted."""
    present = [
        name
        for name in APP_TABLES
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"public.{name}"]).fetchone()
        == (True,)
    ]
    if present and len(present) < len(APP_TABLES):
        missing = ", ".join(sorted(set(APP_TABLES) - set(present)))
        raise SchemaError(
            f"the database has some dashboard tables but not {missing}: "
            "it cannot be adopted as migration 001"
        )
    return bool(present)
