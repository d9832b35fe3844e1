"""Least privilege: roles set up by `init-db --grant-writer/--grant-reader` run every command
without CREATE, and a missing right is one line naming it, exit 2, never a traceback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.memory import b64_sha256, large_file, stored_sha256, tree
from comsa_migrate.db import grants, migrations
from comsa_migrate.errors import ConfigurationError

from .helpers import (
    job_row,
    make_empty_tree,
    new_job_id,
    running_daemon,
    table_counts,
    wait_until,
    write_job_atomically,
)


class Roles:
    """Login roles with unique names (roles are cluster-wide), dropped after the test."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.names: list[str] = []

    def create(self, kind: str) -> str:
        name = f"comsa_test_{kind}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        self.names.append(name)
        return name

    def drop_all(self) -> None:
        """Revoke the roles' rights in every database that still holds some, then drop them."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            databases = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT d.datname FROM pg_shdepend s"
                    " JOIN pg_database d ON d.oid = s.dbid"
                    " JOIN pg_roles r ON r.oid = s.refobjid WHERE r.rolname = ANY(%s)",
                    [self.names],
                ).fetchall()
            ]
        for dbname in [*databases, None]:
            target = as_user(self.admin_dsn, dbname=dbname) if dbname else self.admin_dsn
            try:
                conn = psycopg.connect(target, autocommit=True)
            except psycopg.OperationalError:
                if dbname is not None and not self._exists(dbname):
                    continue  # a test database dropped in the background meanwhile
                raise
            with conn:
                for name in self.names:
                    role = sql.Identifier(name)
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    if dbname is None:
                        conn.execute(sql.SQL("DROP ROLE {}").format(role))

    def _exists(self, dbname: str) -> bool:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname])
            return found.fetchone() is not None


@pytest.fixture
def roles(admin_dsn: str) -> Iterator[Roles]:
    made = Roles(admin_dsn)
    yield made
    if made.names:
        made.drop_all()


def as_user(dsn: str, user: str | None = None, dbname: str | None = None) -> str:
    """The same server and database (or ``dbname``), as ``user``: trust lets any role in."""
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    if user is not None:
        params["user"] = user
    if dbname is not None:
        params["dbname"] = dbname
    return make_conninfo(**params)


def lock_down(dsn: str) -> None:
    """What PUBLIC gets by default and a careful owner takes away: CREATE and TEMP."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        dbname = sql.Identifier(str(conn.info.dbname))
        conn.execute(sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC").format(dbname))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def can_create_anything(dsn: str, role: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT has_database_privilege(%(r)s, current_database(), 'CREATE')"
            " OR has_database_privilege(%(r)s, current_database(), 'TEMPORARY')"
            " OR has_schema_privilege(%(r)s, 'public', 'CREATE')"
            " OR has_schema_privilege(%(r)s, 'comsa_migrate', 'CREATE')",
            {"r": role},
        ).fetchone()
    return row == (True,)


def one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("comsa-migrate: error: ")
    return str(lines[0])


def test_a_writer_without_create_backfills_once_init_db_granted_it_its_rights(
    cli: Any, dsn: str, roles: Roles, sample_tree: Path
) -> None:
    writer = roles.create("writer")
    lock_down(dsn)

    init = cli("init-db", "--dsn", dsn, "--grant-writer", writer)
    first = cli("backfill", sample_tree, "--dsn", as_user(dsn, writer))
    again = cli("backfill", sample_tree, "--dsn", as_user(dsn, writer))

    assert init.exit_code == 0, init.output
    assert init.stdout.splitlines()[-1] == f"granted {writer} the rights of a writer"
    # no CREATE anywhere (nor TEMP): the runs succeeding proves that no DDL was issued
    assert not can_create_anything(dsn, writer)
    assert first.exit_code == 0, first.output
    assert "11 inserted" in first.stdout
    assert "migrations" not in first.stdout
    assert again.exit_code == 0, again.output
    assert "11 unchanged" in again.stdout
    with psycopg.connect(dsn) as conn:
        assert table_counts(conn) == {"jobs": 11, "job_logs": 89, "job_files": 16}


def test_a_writer_streams_a_large_upload_into_job_input_files(
    cli: Any, dsn: str, roles: Roles, tmp_path: Path
) -> None:
    writer = roles.create("writer")
    lock_down(dsn)
    data = tree(tmp_path / "data", "upload", 3 * 1024 * 1024)  # over what a payload carries

    init = cli("init-db", "--input-files", "--dsn", dsn, "--grant-writer", writer)
    result = cli("backfill", data, "--dsn", as_user(dsn, writer))

    assert init.exit_code == 0, init.output
    assert result.exit_code == 0, result.output
    assert "job_input_files 1" in result.stdout
    with psycopg.connect(dsn) as conn:
        upload = large_file(data, "upload")
        assert stored_sha256(conn, upload.name) == b64_sha256(upload)


def test_granting_again_is_harmless_and_leaves_no_right_missing(
    cli: Any, dsn: str, roles: Roles
) -> None:
    writer, reader = roles.create("writer"), roles.create("reader")
    args = ("init-db", "--dsn", dsn, "--grant-writer", writer, "--grant-reader", reader)

    first, second = cli(*args), cli(*args)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines()[1:] == [
        f"granted {writer} the rights of a writer",
        f"granted {reader} the rights of a reader",
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role, kind in ((writer, "writer"), (reader, "reader")):
            assert grants.missing_rights(conn, role, grants.required_rights(conn, kind)) == []
        can_write = conn.execute(
            "SELECT has_table_privilege(%s, 'public.jobs', 'INSERT'),"
            " has_table_privilege(%s, 'comsa_migrate.schema_migrations', 'INSERT')",
            [reader, writer],
        ).fetchone()
    assert can_write == (False, False)


def test_a_reader_runs_report_and_status_and_a_backfill_is_one_line_naming_the_right(
    cli: Any, dsn: str, roles: Roles, sample_tree: Path
) -> None:
    reader = roles.create("reader")
    lock_down(dsn)
    assert cli("init-db", "--dsn", dsn, "--grant-reader", reader).exit_code == 0
    assert cli("backfill", sample_tree, "--dsn", dsn).exit_code == 0
    sample_tree.joinpath("jobs", "8dae3d41-2c40-4f0c-bbcf-2b7b9f4b7b55.json").write_text(
        '{"type": "openva", "status": "completed"}'
    )
    with psycopg.connect(dsn) as conn:
        before = table_counts(conn)

    report = cli("report", sample_tree, "--dsn", as_user(dsn, reader))
    status = cli("status", "--dsn", as_user(dsn, reader))
    backfill = cli("backfill", sample_tree, "--dsn", as_user(dsn, reader))

    assert report.exit_code == 0, report.output
    assert "jobs        1 insert, 0 update, 11 unchanged, 0 conflict, 0 skip" in report.stdout
    assert status.exit_code == 0, status.output
    line = one_error_line(backfill)
    assert line.startswith("comsa-migrate: error: permission denied for table ")
    assert "--grant-writer" in line
    with psycopg.connect(dsn) as conn:
        assert table_counts(conn) == before


def test_a_role_without_rights_gets_one_line_from_report_and_status(
    cli: Any, dsn: str, roles: Roles, sample_tree: Path
) -> None:
    nobody = roles.create("nobody")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")

    report = cli("report", sample_tree, "--dsn", as_user(dsn, nobody))
    status = cli("status", "--dsn", as_user(dsn, nobody))

    assert "permission denied for schema" in one_error_line(report)
    assert "permission denied for schema comsa_migrate" in one_error_line(status)


def test_a_writer_facing_a_pending_migration_says_an_owner_must_run_init_db(
    cli: Any, empty_dsn: str, roles: Roles, sample_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = roles.create("writer")
    lock_down(empty_dsn)
    every, latest = migrations.migrations(), migrations.migrations()[-1]
    with monkeypatch.context() as patch, psycopg.connect(empty_dsn, autocommit=True) as conn:
        patch.setattr(migrations, "migrations", lambda: every[:-1])  # the previous release
        migrations.migrate(conn)
        grants.grant(conn, writer, "writer")

    refused = cli("backfill", sample_tree, "--dsn", as_user(empty_dsn, writer))
    upgrade = cli("init-db", "--dsn", empty_dsn)
    after = cli("backfill", sample_tree, "--dsn", as_user(empty_dsn, writer))

    line = one_error_line(refused)
    assert f"migrations are pending ({latest.file_name}) and role {writer} cannot" in line
    assert "(permission denied " in line
    assert line.endswith("an owner of the database must run `comsa-migrate init-db`")
    assert upgrade.exit_code == 0, upgrade.output
    assert upgrade.stdout.splitlines() == [
        f"applied {latest.file_name}",
        *(f"applied {r.name}" for r in migrations.repeatables()),  # after a new table, all
        f"granted {writer} the rights of a writer on the new objects",
    ]
    assert after.exit_code == 0, after.output
    assert "11 inserted" in after.stdout


def test_a_role_that_cannot_create_the_schema_is_told_so_on_an_empty_database(
    cli: Any, empty_dsn: str, roles: Roles, sample_tree: Path
) -> None:
    writer = roles.create("writer")
    lock_down(empty_dsn)

    line = one_error_line(cli("backfill", sample_tree, "--dsn", as_user(empty_dsn, writer)))

    assert f"role {writer} cannot apply them (permission denied for database " in line
    assert line.endswith("must run `comsa-migrate init-db`")


def test_an_unknown_role_is_one_line_and_nothing_is_migrated(
    cli: Any, empty_dsn: str, roles: Roles
) -> None:
    writer = roles.create("writer")
    missing = f"comsa_test_missing_{uuid.uuid4().hex[:8]}"

    result = cli("init-db", "--dsn", empty_dsn, "--grant-writer", writer, "--grant-reader", missing)

    assert one_error_line(result) == (
        f"comsa-migrate: error: role {missing} does not exist: create it first "
        f'(CREATE ROLE "{missing}" LOGIN)'
    )
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.jobs')").fetchone() == (None,)


def test_a_role_that_cannot_grant_is_told_which_right_is_still_missing(
    cli: Any, dsn: str, roles: Roles
) -> None:
    writer, newcomer = roles.create("writer"), roles.create("newcomer")
    assert cli("init-db", "--dsn", dsn, "--grant-writer", writer).exit_code == 0

    result = cli("init-db", "--dsn", as_user(dsn, writer), "--grant-reader", newcomer)

    assert one_error_line(result) == (
        f"comsa-migrate: error: role {newcomer} still lacks USAGE on schema comsa_migrate "
        "after the GRANT: only the owner of an object (or a superuser) can grant rights on "
        "it; run init-db as the owner"
    )


def test_the_sync_daemon_starts_as_a_writer_and_a_reader_is_refused_in_one_line(
    cli: Any, dsn: str, roles: Roles, tmp_path: Path
) -> None:
    writer, reader = roles.create("writer"), roles.create("reader")
    lock_down(dsn)
    args = ("init-db", "--dsn", dsn, "--grant-writer", writer, "--grant-reader", reader)
    assert cli(*args).exit_code == 0
    data = make_empty_tree(tmp_path)
    before, during = new_job_id(), new_job_id()
    write_job_atomically(data, before)

    with running_daemon(as_user(dsn, writer), data):
        assert job_row(dsn, before) is not None
        write_job_atomically(data, during)
        wait_until(lambda: job_row(dsn, during), what="the daemon to sync a new job")
    refused = cli("sync", data, "--dsn", as_user(dsn, reader))

    assert "permission denied for table " in one_error_line(refused)


def test_a_right_missing_on_a_table_made_after_the_grant_stops_a_backfill_before_any_write(
    cli: Any, dsn: str, roles: Roles, sample_tree: Path
) -> None:
    """The dashboard makes job_input_files at its start-up, after init-db granted the
    writer its rights: only the jobs with an upload would touch it. The run stops at once,
    exit 2, rather than leave those jobs out one db_error at a time."""
    writer = roles.create("writer")
    lock_down(dsn)
    assert cli("init-db", "--dsn", dsn, "--grant-writer", writer).exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.create_input_files_table(conn)  # as the dashboard, its owner

    backfill = cli("backfill", sample_tree, "--dsn", as_user(dsn, writer))
    granted = cli("init-db", "--dsn", dsn, "--grant-writer", writer)
    again = cli("backfill", sample_tree, "--dsn", as_user(dsn, writer))

    line = one_error_line(backfill)
    assert line.startswith("comsa-migrate: error: permission denied for table ")
    assert "public.job_input_files: this role lacks SELECT, INSERT, UPDATE, DELETE" in line
    assert "--grant-writer" in line
    assert granted.exit_code == 0, granted.output
    assert again.exit_code == 0, again.output
    assert "11 inserted" in again.stdout
    with psycopg.connect(dsn) as conn:
        runs = conn.execute("SELECT count(*) FROM comsa_migrate.runs").fetchone()
        assert runs == (1,), "the refused run recorded nothing"


def test_the_daemon_does_not_start_as_a_writer_lacking_a_right(
    dsn: str, roles: Roles, tmp_path: Path
) -> None:
    writer = roles.create("writer")
    lock_down(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
        grants.grant(conn, writer, "writer")
        migrations.create_input_files_table(conn)
    data = make_empty_tree(tmp_path)
    write_job_atomically(data, new_job_id())

    with (
        pytest.raises(ConfigurationError, match="public.job_input_files: this role lacks"),
        running_daemon(as_user(dsn, writer), data),
    ):
        pass
    with psycopg.connect(dsn) as conn:
        assert table_counts(conn)["jobs"] == 0


def test_a_role_with_the_predefined_write_all_data_role_backfills(
    cli: Any, dsn: str, roles: Roles, sample_tree: Path
) -> None:
    """pg_read_all_data and pg_write_all_data, as a managed server's DBA may hand them out:
    UPDATE on a sequence is what nextval() needs, as well as USAGE."""
    role = roles.create("data")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
        migrations.create_input_files_table(conn)
        name = sql.Identifier(role)
        conn.execute(sql.SQL("GRANT pg_read_all_data, pg_write_all_data TO {}").format(name))

    result = cli("backfill", sample_tree, "--dsn", as_user(dsn, role))

    assert result.exit_code == 0, result.output
    assert "11 inserted" in result.stdout


def test_what_a_jobs_write_needs_is_part_of_what_a_writer_is_granted(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.create_input_files_table(conn)
        granted = {
            right.name: set(right.privileges) for right in grants.required_rights(conn, "writer")
        }

    for table, privileges in grants.JOB_WRITE_RIGHTS.items():
        assert set(privileges) <= granted[table], table
