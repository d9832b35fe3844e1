"""The export command: the database's jobs as a legacy tree, for a rollback."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from comsa_migrate.cli.logs import log_to_stderr
from comsa_migrate.cli.options import connection, dsn_option, stop_on_signals
from comsa_migrate.cli.tree_options import (
    file_progress,
    show_progress,
    tree_exit_code,
    tree_options,
)
from comsa_migrate.core.tree_summary import FileOutcome
from comsa_migrate.core.tree_writer import TreeWriteOptions
from comsa_migrate.db.exported_jobs import JobSelection, job_ids
from comsa_migrate.db.stored_files import require_file_store
from comsa_migrate.db.target import connect
from comsa_migrate.errors import RunStopped
from comsa_migrate.export import ExportOptions, export
from comsa_migrate.pipeline.options import DEFAULT_PATH_PREFIX
from comsa_migrate.render.tree_summary import dry_run_line, tree_summary

__all__ = ["export_command"]


def _timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """The --since time as given: one with an offset is turned by the server into its own
    time zone, in which the dashboard's NOW() records its jobs' times; one without is
    compared as the rows hold their times."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time such as 2026-02-01 or 2026-02-01T09:30:00+01:00"
        ) from None


@click.command("export")
@click.argument("data_dir", type=click.Path(path_type=Path, file_okay=False))
@dsn_option
@tree_options
@click.option(
    "--since",
    metavar="TIMESTAMP",
    callback=_timestamp,
    help="Only jobs created, started, completed or logged at or after this time, such as "
    "the cut-over's. With an offset (2026-02-01T09:30:00+01:00) it is taken in the database "
    "server's time zone, as the dashboard's NOW() records times; without one, as the rows "
    "hold them.",
)
@click.option("--dry-run", is_flag=True, help="Write nothing: list what would be written.")
@click.option(
    "--path-prefix",
    metavar="PREFIX",
    default=DEFAULT_PATH_PREFIX,
    show_default=True,
    help="How the rows' paths begin: the backfill's --path-prefix.",
)
def export_command(
    data_dir: Path,
    dsn: str | None,
    file_store: str,
    job: tuple[str, ...],
    force: bool,
    threads: int,
    fsync: str,
    quiet: bool,
    since: datetime | None,
    dry_run: bool,
    path_prefix: str,
) -> int:
    """Write the database's jobs under DATA_DIR as the legacy backend's job store.

    Each job becomes jobs/<id>.json as the legacy backend wrote it: a migrated job is
    its original JSON (kept by the file store) with the row's changes over it; a job the
    dashboard created is its metadata sidecar (when stored) with its row over it, its
    error as a string and each log line with its "[YYYY-MM-DD HH:MM:SS] " time. Its
    uploads come from the file store, else from job_input_files; its outputs from the
    file store (an output never stored cannot come back: it is counted as
    output_not_stored). Every file is written atomically; a file already there with
    other content is left alone, and counted, unless --force.

    \b
    Example:
      comsa-migrate export /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate export backend/data --since "2026-02-01 00:00:00" --dry-run
      comsa-migrate export backend/data --file-store s3://comsa-files/prod --job ID --force

    \b
    Exit codes: 0 every file in place (written or unchanged); 1 some file not written
    or different and left alone; 2 usage, configuration or connection error; 4 stopped
    part-way (the database went away: what was written stays written); 70 a bug; 130
    interrupted (the files written stay written).
    """
    log_to_stderr()
    write = TreeWriteOptions(force=force, dry_run=dry_run, fsync=fsync, workers=threads)
    selection = JobSelection(job_ids(job), since)
    prefix = path_prefix if not path_prefix or path_prefix.endswith("/") else path_prefix + "/"
    options = ExportOptions(data_dir, file_store, selection, prefix, write)
    with connection(dsn, quiet=quiet) as (conn, target), stop_on_signals() as stop:
        require_file_store(conn)
        progress = show_progress(quiet) and not dry_run
        stopped: RunStopped | None = None
        with file_progress(progress, None, _listed if dry_run else None) as on_file:
            try:
                summary = export(conn, options, lambda: connect(target), stop=stop, on_file=on_file)
            except RunStopped as exc:
                summary, stopped = exc.summary, exc
        if stopped is not None:
            click.echo(f"comsa-migrate: error: {stopped}", err=True)
        click.echo(tree_summary(summary, "Export", str(target)))
        return stopped.exit_code if stopped is not None else tree_exit_code(summary)


def _listed(outcome: FileOutcome) -> None:
    line = dry_run_line(outcome)
    if line is not None:
        click.echo(line)
