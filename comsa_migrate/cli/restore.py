"""The restore command: the file store's files back under DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import click

from comsa_migrate.cli.logs import log_to_stderr
from comsa_migrate.cli.options import connection, dsn_option, stop_on_signals
from comsa_migrate.cli.tree_options import (
    file_progress,
    show_progress,
    tree_exit_code,
    tree_options,
)
from comsa_migrate.core.tree_writer import TreeWriteOptions
from comsa_migrate.db.exported_jobs import job_ids
from comsa_migrate.db.stored_files import require_file_store
from comsa_migrate.db.target import connect
from comsa_migrate.errors import RunStopped
from comsa_migrate.render.tree_summary import tree_summary
from comsa_migrate.restore import RestoreOptions, count_files, restore

__all__ = ["restore_command"]


@click.command("restore")
@click.argument("data_dir", type=click.Path(path_type=Path, file_okay=False))
@dsn_option
@tree_options
@click.option(
    "--missing-ok",
    is_flag=True,
    help="A file whose content the store lacks, or holds corrupt, is a warning: it is not "
    "written, and the exit code is 0 if nothing else failed (for a pod's init step, "
    "which one lost content must not keep from starting).",
)
def restore_command(
    data_dir: Path,
    dsn: str | None,
    file_store: str,
    job: tuple[str, ...],
    force: bool,
    threads: int,
    fsync: str,
    quiet: bool,
    missing_ok: bool,
) -> int:
    """Write every file the file store keeps back to its place under DATA_DIR.

    Each job's stored files (jobs/<id>.json, uploads/<id>/..., outputs/<id>/...) come
    back as they were last read, with their mtimes, a file removed since included. Each
    is checked against its sha256 and written atomically (a temporary file in its
    folder, then a link or a rename). A file already there with the same bytes is skipped; one
    with other bytes is left alone, and counted, unless --force. Nothing is written
    outside DATA_DIR, nor through a symbolic link in it. DATA_DIR is made if missing.
    Made to run as a pod's init step, before the dashboard starts on its empty data/.

    \b
    Example:
      comsa-migrate restore /app/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate restore /app/data --file-store db --missing-ok
      comsa-migrate restore backend/data --file-store s3://comsa-files/prod
      comsa-migrate restore backend/data --job 653475d0-3a75-4bb6-b1cb-a3c466a6c02e --force

    \b
    Exit codes: 0 every file in place (written or unchanged); 1 some file not written
    (its content missing from the store or with a wrong checksum, unless --missing-ok;
    unreadable; an unsafe path) or different and left alone; 2 usage, configuration or
    connection error; 4 stopped part-way (the database went away: what was written stays
    written); 70 a bug; 130 interrupted (the files written stay written).
    """
    log_to_stderr()
    write = TreeWriteOptions(force=force, fsync=fsync, workers=threads)
    options = RestoreOptions(data_dir, file_store, job_ids(job), write, missing_ok)
    with connection(dsn, quiet=quiet) as (conn, target), stop_on_signals() as stop:
        require_file_store(conn)
        progress = show_progress(quiet)
        total = count_files(conn, options) if progress else None
        stopped: RunStopped | None = None
        with file_progress(progress, total) as on_file:
            try:
                summary = restore(
                    conn, options, lambda: connect(target), stop=stop, on_file=on_file
                )
            except RunStopped as exc:
                summary, stopped = exc.summary, exc
        if stopped is not None:
            click.echo(f"comsa-migrate: error: {stopped}", err=True)
        click.echo(tree_summary(summary, "Restore", str(target)))
        return stopped.exit_code if stopped is not None else tree_exit_code(summary)
