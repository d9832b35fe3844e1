"""The commands of a migration: backfill, report, init-db and psql."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from comsa_migrate.cli.logs import log_to_stderr
from comsa_migrate.cli.options import (
    batch_size_option,
    connection,
    dashboard_options,
    dsn_option,
    file_store_option,
    max_json_bytes_option,
    progress,
    quiet_option,
    stop_on_signals,
    target_for,
    target_to_read,
    writers_option,
)
from comsa_migrate.core import tree
from comsa_migrate.core.backfill import BackfillOptions, backfill
from comsa_migrate.db import grants
from comsa_migrate.db.embedded_run import run_program
from comsa_migrate.db.migrations import create_input_files_table, migrate
from comsa_migrate.db.target import connect, psql_path
from comsa_migrate.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SKIPPED,
    ComsaMigrateError,
    ConfigurationError,
    RunStopped,
)
from comsa_migrate.problems import Severity
from comsa_migrate.render.summary import REPORT_FORMATS, backfill_summary

__all__ = ["backfill_command", "init_db_command", "psql_command", "report_command"]


@click.command("backfill")
@click.argument("data_dir", type=click.Path(path_type=Path))
@dsn_option
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite jobs whose database rows were changed "
    "by something else (conflicts), and re-read every job.",
)
@quiet_option
@max_json_bytes_option
@batch_size_option
@writers_option(
    "Writer connections, each writing its own batches (one server backend, so one "
    "of the server's cores, each), and up to as many processes scanning the tree (no "
    "more than this machine's cores). On a remote server with C free cores, try C."
)
@dashboard_options
@file_store_option(
    "Also keep the contents of every job's files (its JSON, uploads and outputs), so that "
    "they outlive this disk: `db` in this database (comsa_migrate.file_contents), or "
    "s3://bucket/prefix in any S3 API (credentials and endpoint from the AWS_* variables, "
    "AWS_ENDPOINT_URL included). Each content is stored once; a rerun sends only what "
    "changed. See docs/file-store.md."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Write nothing: print the report of what this backfill would do (see report).",
)
def backfill_command(
    data_dir: Path,
    dsn: str | None,
    force: bool,
    quiet: bool,
    max_json_bytes: int,
    batch_size: int,
    writers: int,
    dashboard: dict[str, Any],
    file_store: str | None,
    dry_run: bool,
) -> int:
    """Write every job under DATA_DIR into PostgreSQL, one transaction per job.

    DATA_DIR is the legacy backend/data folder (jobs/, uploads/, outputs/). Pending
    schema migrations are applied first. A rerun skips unchanged jobs from stat alone,
    and a job changed in the database by anything else is never overwritten without
    --force. Ctrl-C finishes the jobs in flight and prints the summary so far.

    \b
    Example:
      comsa-migrate backfill fixtures/legacy-sample/data
      comsa-migrate backfill /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate backfill /srv/comsa/backend/data --owner admin@example.org
      comsa-migrate backfill /srv/comsa/backend/data --file-store db
      AWS_ENDPOINT_URL=https://minio.example.org \
          comsa-migrate backfill /srv/comsa/backend/data --file-store s3://comsa/files

    Paths are written as the dashboard opens them from its backend/ folder
    (data/uploads/<id>/input.csv: see --path-prefix); uploads are copied into the
    dashboard's job_input_files where it exists.

    \b
    Exit codes: 0 every job written or unchanged; 1 some job skipped (error or
    conflict); 2 usage, configuration or connection error, nothing written;
    4 stopped part-way (the database went away; rerun to finish); 70 a bug;
    130 interrupted.
    With --dry-run, the exit codes of report.
    """
    log_to_stderr()
    options = BackfillOptions(
        data_dir, force, max_json_bytes, batch_size, writers=writers, file_store=file_store,
        **dashboard,
    )  # fmt: skip
    if dry_run:
        out = _ReportOutput(file_store=file_store)
        return _report(options, dsn, offline=False, out=out, quiet=quiet)
    tree.check_data_dir(data_dir)  # before a server is started or connected to
    with connection(dsn, quiet=quiet) as (conn, target), stop_on_signals() as stop:
        show_progress = not quiet and sys.stderr.isatty()
        total = tree.count_job_files(data_dir) if show_progress else 0
        try:
            with progress(show_progress, total) as observers:
                summary = backfill(
                    conn, options, stop=stop, observers=observers, connect=lambda: connect(target)
                )
        except RunStopped as exc:
            click.echo(f"comsa-migrate: error: {exc}", err=True)
            click.echo(backfill_summary(exc.summary, str(data_dir), str(target)))
            return exc.exit_code
        click.echo(backfill_summary(summary, str(data_dir), str(target)))
        if summary.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if summary.ok else EXIT_SKIPPED


@click.command("report")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--dsn",
    metavar="DSN",
    help="PostgreSQL to compare with, read only (postgresql://user@host:5432/dbname). "
    "Default: COMSA_DSN, DATABASE_URL, then libpq's PG* variables (a .env file counts); "
    "with none of these, the embedded PostgreSQL if a backfill made it, else the files "
    "alone are validated.",
)
@click.option("--offline", is_flag=True, help="Validate the files alone; connect to nothing.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(REPORT_FORMATS),
    default="text",
    show_default=True,
    help="text fits 80 columns; json has the versioned shape of docs/report-schema.json; "
    "markdown is ready to paste into an issue.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report to FILE instead of stdout.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["error", "warning"]),
    default="error",
    show_default=True,
    help="Exit 1 when a problem is at least this severe.",
)
@click.option("--all", "show_all", is_flag=True, help="List every problem, not 10 per code.")
@quiet_option
@max_json_bytes_option
@writers_option(
    "Processes scanning the tree (no more than this machine's cores); the database is "
    "read on one connection."
)
@dashboard_options
@file_store_option(
    "Also check the file store: every stored file's content there and whole (each "
    "content read back and hashed), files changed or removed on disk since they were "
    "stored, and the store's size. Reads only. See docs/file-store.md."
)
def report_command(
    data_dir: Path,
    dsn: str | None,
    offline: bool,
    fmt: str,
    output: Path | None,
    fail_on: str,
    show_all: bool,
    quiet: bool,
    max_json_bytes: int,
    writers: int,
    dashboard: dict[str, Any],
    file_store: str | None,
) -> int:
    """Say what the next backfill of DATA_DIR would do, and what is wrong with the data.

    Nothing is written: the database is read in one READ ONLY transaction, no migration
    is applied, no run is recorded. Each job gets the action the next backfill would
    take, and the database is checked for drift (jobs with no JSON, rows changed by
    something else, job_files rows that no longer match the disk). With no database
    configured, the embedded PostgreSQL is read if a backfill made it; without it, or
    with --offline, the files alone are validated (no embedded database is made). The
    report goes to stdout (or --output); progress and logs go to stderr.

    \b
    Example:
      comsa-migrate report fixtures/legacy-sample/data --offline
      comsa-migrate report /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate report DATA_DIR --format markdown --output report.md
      comsa-migrate report DATA_DIR --format json --fail-on warning > report.json
      comsa-migrate report /srv/comsa/backend/data --file-store db

    \b
    Exit codes: 0 no error-level problem; 1 some error (with --fail-on warning, also
    a warning); 2 usage, configuration or connection error; 130 interrupted.
    """
    log_to_stderr()
    options = BackfillOptions(data_dir, max_json_bytes=max_json_bytes, writers=writers, **dashboard)
    out = _ReportOutput(fmt, output, fail_on, show_all, file_store)
    return _report(options, dsn, offline=offline, out=out, quiet=quiet)


@dataclass(frozen=True, slots=True)
class _ReportOutput:
    """How a report is written out and judged."""

    fmt: str = "text"
    output: Path | None = None
    fail_on: str = "error"
    show_all: bool = False
    file_store: str | None = None  # the store to check (report/stored.py)


def _report(
    options: BackfillOptions, dsn: str | None, *, offline: bool, out: _ReportOutput, quiet: bool
) -> int:
    """Build the report (read only, or offline), write it out; its verdict is the exit code."""
    from comsa_migrate.render.report import render
    from comsa_migrate.report.plan import build_report  # only the report needs these
    from comsa_migrate.report.stored import check_file_store

    with stop_on_signals() as stop:
        tree.check_data_dir(options.data_dir)  # before a database is connected to
        target = None if offline else target_to_read(dsn, quiet=quiet)
        if target is None and out.file_store is not None:
            raise ConfigurationError("--file-store: the check reads stored_files: give a database")
        show_progress = not quiet and sys.stderr.isatty()
        total = tree.count_job_files(options.data_dir) if show_progress else 0
        with progress(show_progress, total) as observers:
            if target is None:
                reason = "--offline" if offline else "no database configured"
                report = build_report(
                    None, options, offline_reason=reason, observers=observers, stop=stop
                )
            else:
                with connect(target) as conn:
                    report = build_report(
                        conn, options, target=str(target), observers=observers, stop=stop
                    )
                    if out.file_store is not None:
                        check = check_file_store(conn, out.file_store, options.data_dir, stop)
                        report = replace(report, file_store=check)
        output = out.output
        color = output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        text = render(report, out.fmt, color=color, show_all=out.show_all)
        if output is None:
            click.echo(text, nl=False)
        else:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ComsaMigrateError(f"cannot write {output}: {exc.strerror or exc}") from None
        if report.interrupted:
            return EXIT_INTERRUPTED
        severity = Severity.WARNING if out.fail_on == "warning" else Severity.ERROR
        return EXIT_SKIPPED if report.fails(severity) else EXIT_OK


@click.command("init-db")
@dsn_option
@click.option(
    "--grant-writer",
    "writers",
    multiple=True,
    metavar="ROLE",
    help="Give ROLE (which must exist) the rights to run backfill, sync, report and status "
    "without creating anything. Repeatable.",
)
@click.option(
    "--grant-reader",
    "readers",
    multiple=True,
    metavar="ROLE",
    help="Give ROLE (which must exist) the rights to run report and status. Repeatable.",
)
@click.option(
    "--input-files",
    is_flag=True,
    help="Also create the dashboard's job_input_files (its 003_input_file_storage), so that "
    "a backfill before the dashboard's first start stores uploads there.",
)
def init_db_command(
    dsn: str | None, writers: tuple[str, ...], readers: tuple[str, ...], input_files: bool
) -> None:
    """Create or upgrade the schema: the dashboard's tables and comsa-migrate's bookkeeping.

    Run it as a role that may create them (the owner); then roles without CREATE can
    run everything else. Idempotent. Tables the dashboard created by hand from
    001_initial_schema.sql are adopted. A migration file changed after it was applied
    is refused.

    \b
    The rights given on this database (none of them creates anything):
      --grant-writer ROLE (backfill, sync, report, status): CONNECT on it;
        USAGE on the schemas public and comsa_migrate; SELECT, INSERT, UPDATE,
        DELETE on jobs, job_logs, job_files and the tables of comsa_migrate
        (SELECT only on its schema_migrations); USAGE on their sequences;
        EXECUTE on the functions and the procedure of comsa_migrate.
      --grant-reader ROLE (report, status): CONNECT; the same USAGE; SELECT on
        the same tables; EXECUTE on the functions of comsa_migrate.

    Granting again is harmless, and rights are only added (REVOKE takes them
    back). Whenever a new migration is applied (by init-db, or by a backfill or
    sync run by the owner), the roles set up with these options are given their
    rights on the new objects too.

    \b
    Example:
      comsa-migrate init-db --dsn postgresql://postgres@127.0.0.1:5432/comsa_dashboard
      comsa-migrate init-db --dsn postgresql://postgres@db/comsa_dashboard \\
          --grant-writer comsa_writer --grant-reader comsa_reader
      comsa-migrate init-db --dsn postgresql://postgres@db/comsa_dashboard --input-files
    """
    log_to_stderr()
    requested: list[tuple[str, grants.Kind]] = [
        *((role, "writer") for role in writers),
        *((role, "reader") for role in readers),
    ]
    with connection(dsn) as (conn, target):
        grants.require_roles(conn, [role for role, _ in requested])
        result = migrate(conn)
        for name in result.applied:
            click.echo(f"applied {name}")
        for name in result.adopted:
            click.echo(f"adopted the existing tables as {name}")
        for name in result.functions:
            click.echo(f"applied {name}")
        for role, kind in result.regranted:
            click.echo(f"granted {role} the rights of a {kind} on the new objects")
        if not result.changed:
            click.echo(f"{target}: schema is up to date")
        if input_files:
            created = create_input_files_table(conn)
            click.echo("created job_input_files" if created else "job_input_files exists")
        for role, kind in requested:
            grants.grant(conn, role, kind)
            click.echo(f"granted {role} the rights of a {kind}")


@click.command("psql", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def psql_command(dsn: str | None, psql_args: tuple[str, ...]) -> int:
    """Open psql on the database comsa-migrate uses (the embedded one by default).

    Arguments after the options go to psql.

    \b
    Example:
      comsa-migrate psql -c "SELECT status, count(*) FROM jobs GROUP BY status"
    """
    log_to_stderr()
    target = target_for(dsn)
    psql = psql_path(target)
    return run_program([psql, "--dbname", target.dsn, *psql_args])
