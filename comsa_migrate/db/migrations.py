"""Schema migrations: the numbered SQL files of schema/ for tables, applied once each in
order, and the repeatable files of schema/functions/ for functions and procedures,
applied again whenever their text changes; each recorded with its checksum."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from comsa_migrate.db import grants
from comsa_migrate.db.faults import DEFAULT_LIMITS, set_limits
from comsa_migrate.errors import SchemaError, first_line

__all__ = [
    "Migration",
    "MigrationResult",
    "Repeatable",
    "migrate",
    "migrations",
    "pending_functions",
    "pending_migrations",
    "repeatables",
]

log = logging.getLogger(__name__)

BOOKKEEPING_SCHEMA = "comsa_migrate"
APP_TABLES = ("jobs", "job_logs", "job_files")
#: a fixed key for pg_advisory_xact_lock, so that two migrating processes take turns
_MIGRATION_LOCK = 0x636F6D7361_01

_SCHEMA_EXISTS = "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'comsa_migrate')"
_TABLE_EXISTS = "SELECT to_regclass('comsa_migrate.schema_migrations') IS NOT NULL"
_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS comsa_migrate.schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    adopted BOOLEAN NOT NULL DEFAULT FALSE
)
"""
_BOOTSTRAP_REPEATABLES = """
CREATE TABLE IF NOT EXISTS comsa_migrate.schema_repeatables (
    name TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
_REPEATABLES_EXIST = "SELECT to_regclass('comsa_migrate.schema_repeatables') IS NOT NULL"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_REPEATABLE_NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")
FUNCTIONS = "functions"
#: checksums of the forms in which numbered migrations shipped before their functions
#: moved to schema/functions/: the tables they made are the same, so a database that
#: recorded one of these is up to date with the file as it is now
EARLIER_FORMS = {
    2: frozenset(
        {
            "2552af69a20ab392d741a9ace00c52b481fedcc2ed842cf439ea89a835257a60",
            "2f4086fe6767d0cfb367038a42d8339a6e955a22b7f0fe5d723836161ee44392",
        }
    ),
    4: frozenset(
        {
            "f7b005d3e7c54f4d537b25ae02c3ad954c2a2683da5f4269475c246e4a281a22",
            "b3be652c1a33759c182127e9fcf1cbbac864686b6092400ed82d1440b8a62014",
        }
    ),
    5: frozenset(
        {
            "c1ba17450417957f59f37ecebeb619f66704a5f970e1766f8ec2b30397c1c818",
            "472200a956c2998efa17205a926347676ebb0a867d740f339d84fd0bb3790369",
            "0d20016adcd2f9e36d951969967012d93128ae880639c344499299194f2f1070",
        }
    ),
}


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
class Repeatable:
    """A file of schema/functions/: functions and procedures, applied again when it changes."""

    name: str  # "functions/40_apply_job.sql"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationResult:
    applied: tuple[str, ...]  # file names applied now
    adopted: tuple[str, ...]  # file names found already applied by hand, recorded now
    #: (role, "writer" or "reader"): roles set up before, granted their rights again
    regranted: tuple[tuple[str, str], ...] = ()
    functions: tuple[str, ...] = ()  # repeatable files applied now, new or changed

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.adopted or self.functions)


def migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found = []
    for item in resources.files("comsa_migrate.db.sql").iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def repeatables() -> list[Repeatable]:
    """The function files shipped with this version, in the order they are applied."""
    folder = resources.files("comsa_migrate.db.sql").joinpath(FUNCTIONS)
    found = [
        Repeatable(f"{FUNCTIONS}/{item.name}", item.read_text("utf-8"))
        for item in folder.iterdir()
        if _REPEATABLE_NAME.match(item.name)
    ]
    return sorted(found, key=lambda r: r.name)


def create_input_files_table(conn: psycopg.Connection[Any]) -> bool:
    """Create the dashboard's job_input_files as the dashboard would; False if it existed."""
    if conn.execute("SELECT to_regclass('public.job_input_files')").fetchone() != (None,):
        return False
    sql = resources.files("comsa_migrate.db.sql").joinpath("dashboard_job_input_files.sql")
    with conn.transaction():
        conn.execute(sql.read_text("utf-8").encode())
    return True


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations not yet recorded, without changing anything (safe in a read-only transaction)."""
    recorded = _recorded(conn)
    return [m for m in migrations() if m.version not in recorded]


def pending_functions(conn: psycopg.Connection[Any]) -> list[Repeatable]:
    """Function files new or changed since the database's were applied, without changing
    anything (safe in a read-only transaction)."""
    recorded: dict[str, str] = {}
    if conn.execute(_REPEATABLES_EXIST).fetchone() == (True,):
        rows = conn.execute("SELECT name, checksum FROM comsa_migrate.schema_repeatables")
        recorded = {str(name): str(checksum) for name, checksum in rows.fetchall()}
    return [r for r in repeatables() if recorded.get(r.name) != r.checksum]


def migrate(conn: psycopg.Connection[Any]) -> MigrationResult:
    """Apply every pending migration in one transaction; idempotent.

    When every migration is applied already, this only reads
    comsa_migrate.schema_migrations: no lock, no DDL, so a role without CREATE can run
    the commands that call it. Tables that the dashboard created by hand from 001 are
    adopted, not re-created. A migration whose file changed after it was applied stops
    everything. After applying migrations, the roles set up by `init-db --grant-writer`
    or `--grant-reader` are given their rights on whatever the migrations created.
    """
    with conn.transaction():
        set_limits(conn, DEFAULT_LIMITS)  # a role's limits never cut a migration short
        pending = [m.file_name for m in _pending(_recorded(conn))]
        pending += [r.name for r in pending_functions(conn)]
    if not pending:
        return MigrationResult((), ())
    try:
        with conn.transaction():
            set_limits(conn, DEFAULT_LIMITS)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            conn.execute("SET LOCAL search_path = public")
            applied, adopted = _apply_pending(conn)
            functions = _apply_repeatables(conn, everything=bool(applied or adopted))
            regranted = grants.reapply(conn) if applied or adopted or functions else []
    except psycopg.errors.InsufficientPrivilege as exc:
        names = ", ".join(pending)
        reason = first_line(exc)
        raise SchemaError(
            f"migrations are pending ({names}) and role {conn.info.user} cannot apply them "
            f"({reason}): an owner of the database must run `comsa-migrate init-db`"
        ) from None
    for name in applied:
        log.info("applied migration %s", name)
    for name in adopted:
        log.info("adopted existing tables for migration %s", name)
    for name in functions:
        log.info("applied %s", name)
    return MigrationResult(tuple(applied), tuple(adopted), tuple(regranted), tuple(functions))


def _apply_repeatables(conn: psycopg.Connection[Any], *, everything: bool) -> list[str]:
    """Under the migration lock: each function file that is new or changed (``everything``
    after a numbered migration, so that the functions meet the tables as they are now)."""
    if conn.execute(_REPEATABLES_EXIST).fetchone() != (True,):
        conn.execute(_BOOTSTRAP_REPEATABLES)
    due = repeatables() if everything else pending_functions(conn)
    for repeatable in due:
        _run(conn, repeatable.name, repeatable.sql)
        conn.execute(
            "INSERT INTO comsa_migrate.schema_repeatables AS r (name, checksum)"
            " VALUES (%s, %s) ON CONFLICT (name) DO UPDATE"
            " SET checksum = EXCLUDED.checksum, applied_at = now()",
            [repeatable.name, repeatable.checksum],
        )
    return [r.name for r in due]


def _pending(recorded: dict[int, str]) -> list[Migration]:
    """The migrations not recorded yet; raises for a changed or an unknown newer one."""
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
    return [m for m in migrations() if m.version not in recorded]


def _apply_pending(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """Under the migration lock: the bookkeeping table, then each migration still pending.

    The list is read again because another process may have migrated while this one
    waited for the lock. CREATE SCHEMA and CREATE TABLE check the CREATE right before
    IF NOT EXISTS, so each runs only when its object is missing.
    """
    if conn.execute(_SCHEMA_EXISTS).fetchone() != (True,):
        conn.execute("CREATE SCHEMA IF NOT EXISTS comsa_migrate")
    if conn.execute(_TABLE_EXISTS).fetchone() != (True,):
        conn.execute(_BOOTSTRAP)
    applied: list[str] = []
    adopted: list[str] = []
    for migration in _pending(_recorded(conn)):
        if migration.version == 1 and _app_tables_exist(conn):
            adopted.append(migration.file_name)
        else:
            _run(conn, migration.file_name, migration.sql)
            applied.append(migration.file_name)
        conn.execute(
            "INSERT INTO comsa_migrate.schema_migrations (version, name, checksum, adopted)"
            " VALUES (%s, %s, %s, %s)",
            [migration.version, migration.name, migration.checksum, migration.file_name in adopted],
        )
    return applied, adopted


def _run(conn: psycopg.Connection[Any], name: str, sql: str) -> None:
    """Run one file's SQL; a file the server refuses names itself (a missing right is said
    by migrate(), which knows what the role should do)."""
    try:
        conn.execute(sql.encode())
    except psycopg.errors.InsufficientPrivilege:
        raise
    except psycopg.Error as exc:
        raise SchemaError(f"{name} could not be applied: {first_line(exc)}") from None


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, str]:
    if conn.execute(_TABLE_EXISTS).fetchone() != (True,):
        return {}
    rows = conn.execute("SELECT version, checksum FROM comsa_migrate.schema_migrations")
    return {int(version): str(checksum) for version, checksum in rows.fetchall()}


def _check_unchanged(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum not in {migration.checksum, *EARLIER_FORMS.get(migration.version, ())}:
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
