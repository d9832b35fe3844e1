"""The rights of roles that run comsa-migrate without owning its schema: writers and readers."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from comsa_migrate.errors import ConfigurationError, SchemaError, first_line

__all__ = [
    "JOB_WRITE_RIGHTS",
    "KINDS",
    "Kind",
    "Right",
    "grant",
    "missing_rights",
    "reapply",
    "require_job_write_rights",
    "require_roles",
    "required_rights",
]

log = logging.getLogger(__name__)

Kind = Literal["writer", "reader"]
KINDS: tuple[Kind, ...] = ("writer", "reader")

#: Every object a writer or a reader needs a right on, with the rights of each (NULL:
#: none). A writer runs backfill and sync, a reader report and status; neither creates
#: anything. Names come quoted by the server (format %I), ready for a GRANT.
_RIGHTS = """
WITH app_table AS (
    SELECT c.oid FROM pg_class c
    WHERE c.oid IN (to_regclass('public.jobs'), to_regclass('public.job_logs'),
                    to_regclass('public.job_files'), to_regclass('public.job_input_files'))
)
SELECT 1 AS rank, 'DATABASE' AS kind, format('%I', d.datname) AS name, d.oid,
       'CONNECT' AS writer, 'CONNECT' AS reader
FROM pg_database d WHERE d.datname = current_database()
UNION ALL
SELECT 2, 'SCHEMA', format('%I', n.nspname), n.oid, 'USAGE', 'USAGE'
FROM pg_namespace n WHERE n.nspname IN ('public', 'comsa_migrate')
UNION ALL
-- the migrations' record is read by every command and written by none of these roles
SELECT 3, 'TABLE', format('%I.%I', n.nspname, c.relname), c.oid,
       CASE WHEN (n.nspname, c.relname) = ('comsa_migrate', 'schema_migrations')
            THEN 'SELECT' ELSE 'SELECT, INSERT, UPDATE, DELETE' END,
       'SELECT'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND (n.nspname = 'comsa_migrate' OR c.oid IN (SELECT oid FROM app_table))
UNION ALL
-- the dashboard's users, where it has them: a writer looks up --owner there
SELECT 3, 'TABLE', 'public.users', c.oid, 'SELECT', NULL
FROM pg_class c WHERE c.oid = to_regclass('public.users')
UNION ALL
-- comsa_migrate's sequences, and those behind the serial columns of the dashboard's tables
SELECT 4, 'SEQUENCE', format('%I.%I', n.nspname, s.relname), s.oid, 'USAGE', NULL
FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE s.relkind = 'S'
  AND (n.nspname = 'comsa_migrate' OR EXISTS (
      SELECT FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        AND d.refobjid IN (SELECT oid FROM app_table)))
UNION ALL
-- the report calls plan_job() and what it calls; a procedure, should one come, is a writer's
SELECT 5, CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       p.oid, 'EXECUTE', CASE WHEN p.prokind = 'p' THEN NULL ELSE 'EXECUTE' END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'comsa_migrate'
ORDER BY 1, 3
"""

#: The roles that --grant-writer or --grant-reader set up: only they are granted SELECT
#: on comsa_migrate.schema_migrations (explicitly, not as owner or through PUBLIC), and
#: only a writer INSERT on comsa_migrate.runs.
_GRANTEES = """
SELECT r.rolname,
       EXISTS (SELECT FROM pg_class w CROSS JOIN LATERAL aclexplode(w.relacl) b
               WHERE w.oid = to_regclass('comsa_migrate.runs')
                 AND b.grantee = r.oid AND b.privilege_type = 'INSERT') AS writer
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = to_regclass('comsa_migrate.schema_migrations')
  AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
ORDER BY r.rolname
"""

_HAS_PRIVILEGE = {
    "DATABASE": "has_database_privilege",
    "SCHEMA": "has_schema_privilege",
    "TABLE": "has_table_privilege",
    "SEQUENCE": "has_sequence_privilege",
    "FUNCTION": "has_function_privilege",
    "PROCEDURE": "has_function_privilege",
}


@dataclass(frozen=True, slots=True)
class Right:
    """Privileges on one object, e.g. SELECT, INSERT on TABLE public.jobs."""

    object_type: str  # DATABASE, SCHEMA, TABLE, SEQUENCE, FUNCTION or PROCEDURE
    name: str  # quoted by the server: public.jobs, comsa_migrate.plan_job(job jsonb, ...)
    oid: int
    privileges: tuple[str, ...]

    def __str__(self) -> str:
        return f"{', '.join(self.privileges)} on {self.object_type.lower()} {self.name}"


def required_rights(conn: psycopg.Connection[Any], kind: Kind) -> list[Right]:
    """What a ``kind`` role needs on the objects of this database as they are now."""
    rights = []
    for _rank, object_type, name, oid, writer, reader in conn.execute(_RIGHTS).fetchall():
        privileges = writer if kind == "writer" else reader
        if privileges:
            rights.append(Right(object_type, name, int(oid), tuple(privileges.split(", "))))
    return rights


#: what a job's write does on the dashboard's tables (apply_job()), which only the jobs
#: that reach a table touch: a right missing there would fail those jobs one by one, each
#: a db_error. Part of what init-db --grant-writer gives (a test checks); job_input_files
#: only when uploads are copied there.
JOB_WRITE_RIGHTS = {
    "public.jobs": ("SELECT", "INSERT", "UPDATE"),
    "public.job_logs": ("SELECT", "INSERT", "DELETE"),
    "public.job_files": ("SELECT", "INSERT", "DELETE"),
    "public.job_input_files": ("SELECT", "INSERT", "UPDATE", "DELETE"),
}
#: which of those this role lacks, in that order, then the sequences of the log and file
#: rows' ids (nextval() takes USAGE or UPDATE: pg_write_all_data gives UPDATE)
_LACKED = """
SELECT 'table', t.name, string_agg(p.privilege, ', ' ORDER BY p.n)
FROM unnest(%(tables)s::text[], %(privileges)s::text[]) WITH ORDINALITY AS t(name, privileges, rank)
CROSS JOIN LATERAL unnest(string_to_array(t.privileges, ' ')) WITH ORDINALITY AS p(privilege, n)
WHERE to_regclass(t.name) IS NOT NULL
  AND NOT has_table_privilege(to_regclass(t.name), p.privilege)
GROUP BY t.rank, t.name
UNION ALL
SELECT 'sequence', s.name, 'USAGE'
FROM unnest(ARRAY['public.job_logs', 'public.job_files']) AS t(name)
CROSS JOIN LATERAL (SELECT CASE WHEN to_regclass(t.name) IS NOT NULL
                                THEN pg_get_serial_sequence(t.name, 'id') END AS name) AS s
WHERE s.name IS NOT NULL AND NOT has_sequence_privilege(s.name, 'USAGE, UPDATE')
"""


def require_job_write_rights(conn: psycopg.Connection[Any], *, inputs: bool) -> None:
    """Raises ConfigurationError, naming the first, when the session's role lacks a right a
    job's write needs on the dashboard's tables (``inputs``: job_input_files too). Asked
    before a backfill or the daemon writes anything: a right missing on a table some jobs
    alone touch (job_input_files, made by the dashboard after the grant) stops the run,
    rather than failing those jobs one by one. The rights on comsa_migrate's own objects
    are met at the run's start anyway, in PostgreSQL's words."""
    wanted = {t: p for t, p in JOB_WRITE_RIGHTS.items() if inputs or t != "public.job_input_files"}
    params = {"tables": list(wanted), "privileges": [" ".join(p) for p in wanted.values()]}
    lacked = conn.execute(_LACKED, params).fetchone()
    if lacked is not None:
        kind, name, privileges = lacked
        raise ConfigurationError(
            f"permission denied for {kind} {name}: this role lacks {privileges} there, "
            "which a job's write needs (an owner grants every right a writer needs with "
            "comsa-migrate init-db --grant-writer ROLE)"
        )


def require_roles(conn: psycopg.Connection[Any], roles: list[str]) -> None:
    """Raises, naming the first of ``roles`` that does not exist."""
    for role in roles:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None:
            create = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role))
            raise ConfigurationError(
                f"role {role} does not exist: create it first ({create.as_string(conn)})"
            )


def grant(conn: psycopg.Connection[Any], role: str, kind: Kind) -> list[Right]:
    """Give ``role`` every right a ``kind`` needs, in one transaction; idempotent.

    Rights are only added: a reader made a writer keeps its rights, and so does a writer
    granted as a reader. Raises when the role does not exist, or when it still lacks a
    right afterwards (GRANT by someone who does not own an object only warns).
    """
    with conn.transaction():
        require_roles(conn, [role])
        rights = required_rights(conn, kind)
        for statement in _statements(rights, role):
            conn.execute(statement)
        missing = missing_rights(conn, role, rights)
    if missing:
        raise SchemaError(
            f"role {role} still lacks {missing[0]} after the GRANT: only the owner of an "
            "object (or a superuser) can grant rights on it; run init-db as the owner"
        )
    log.info("granted %s the rights of a %s", role, kind)
    return rights


def missing_rights(conn: psycopg.Connection[Any], role: str, rights: list[Right]) -> list[Right]:
    """The rights ``role`` does not hold, directly, through a role it belongs to or PUBLIC."""
    missing = []
    for right in rights:
        check = sql.SQL("SELECT {}(%s, %s::oid, %s)").format(
            sql.Identifier(_HAS_PRIVILEGE[right.object_type])
        )
        lacking = tuple(
            privilege
            for privilege in right.privileges
            if conn.execute(check, [role, right.oid, privilege]).fetchone() != (True,)
        )
        if lacking:
            missing.append(Right(right.object_type, right.name, right.oid, lacking))
    return missing


def reapply(conn: psycopg.Connection[Any]) -> list[tuple[str, Kind]]:
    """Grant again every role set up before, on the objects that migrations just created.

    Runs in the caller's transaction, in a savepoint: a role that may migrate but not
    grant leaves a warning, not a failed migration.
    """
    done: list[tuple[str, Kind]] = []
    try:
        with conn.transaction():
            for role, is_writer in conn.execute(_GRANTEES).fetchall():
                kind: Kind = "writer" if is_writer else "reader"
                for statement in _statements(required_rights(conn, kind), role):
                    conn.execute(statement)
                done.append((role, kind))
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = first_line(exc)
        log.warning(
            "could not grant the roles set up with init-db their rights on the new "
            "objects (%s): run init-db --grant-writer/--grant-reader again as the owner",
            reason,
        )
        return []
    for role, kind in done:
        log.info("granted %s the rights of a %s on the new objects", role, kind)
    return done


def _statements(rights: list[Right], role: str) -> list[sql.Composed]:
    """One GRANT per kind of object and set of privileges, naming every such object."""
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for right in rights:
        groups[right.object_type, right.privileges].append(right.name)
    return [
        sql.SQL("GRANT {privileges} ON {object_type} {names} TO {role}").format(
            # privileges and object types come from _RIGHTS; names were quoted by format(%I)
            privileges=sql.SQL(", ".join(privileges)),
            object_type=sql.SQL(object_type),
            names=sql.SQL(", ".join(names)),
            role=sql.Identifier(role),
        )
        for (object_type, privileges), names in groups.items()
    ]
