"""What the comsa-migrate commands share: common options, the database to use, signals and
the progress bar."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import psycopg

from comsa_migrate.core.backfill import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_PATH_PREFIX,
    DEFAULT_WRITERS,
)
from comsa_migrate.core.summary import JobResult, Observer
from comsa_migrate.core.uploads import DEFAULT_MAX_INPUT_BYTES
from comsa_migrate.db.embedded import find_embedded, start_embedded
from comsa_migrate.db.faults import Limits
from comsa_migrate.db.target import Target, connect, embedded_home, resolve_target
from comsa_migrate.problems import Problem

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
quiet_option = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress bar, and no notice of the embedded PostgreSQL on stderr.",
)


def _file_store_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "db" or value.startswith("s3://"):
        return value
    raise click.BadParameter(f"{value!r} is not a store: use db or s3://bucket/prefix")


def file_store_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--file-store URL, where the contents of the jobs' files are kept (docs/file-store.md)."""
    return click.option(
        "--file-store",
        metavar="URL",
        callback=_file_store_url,
        help=help_text,
    )


def writers_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """-j/--jobs N, the writer connections, given to the command as ``writers``."""
    return click.option(
        "-j",
        "--jobs",
        "writers",
        type=click.IntRange(1, 64),
        default=DEFAULT_WRITERS,
        show_default=True,
        metavar="N",
        help=help_text,
    )


def _folder_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return value if not value or value.endswith("/") else value + "/"


_DURATION = re.compile(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A PostgreSQL duration: a number with us, ms, s, min, h or d (ms without one)."""
    if not _DURATION.fullmatch(value.strip()):
        raise click.BadParameter(f"{value!r} is not a duration such as 0, 500ms, 30s or 5min")
    return value.strip()


_DASHBOARD_OPTIONS = (
    click.option(
        "--path-prefix",
        metavar="PREFIX",
        default=DEFAULT_PATH_PREFIX,
        show_default=True,
        callback=_folder_prefix,
        help="DATA_DIR as the dashboard's working folder (backend/) sees it: input_file_path "
        "and job_files.file_path are written as PREFIX + uploads/<id>/..., which the "
        "dashboard opens. '' writes them relative to DATA_DIR, as the schema document words it.",
    ),
    click.option(
        "--owner",
        metavar="EMAIL",
        help="Give the migrated jobs that have no owner the dashboard user with this e-mail "
        "(users.email; needs the dashboard's users table). Jobs with an owner keep theirs.",
    ),
    click.option(
        "--input-content/--no-input-content",
        default=True,
        show_default=True,
        help="Copy each job's uploads into the dashboard's job_input_files (base64), when "
        "that table exists, so that a new pod can restore them.",
    ),
    click.option(
        "--max-input-bytes",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_INPUT_BYTES,
        show_default=True,
        help="Larger uploads are not copied into job_input_files (input_too_large).",
    ),
    click.option(
        "--statement-timeout",
        metavar="DURATION",
        default="0",
        show_default=True,
        callback=_duration,
        help="The longest one statement of the tool may run, such as one job's write (500ms, "
        "30s, 5min). A job whose write it cancels is skipped (db_error) and the run goes on. "
        "0 is no limit. The tool's own transactions use this, never the role's "
        "statement_timeout.",
    ),
    click.option(
        "--lock-timeout",
        metavar="DURATION",
        default="0",
        show_default=True,
        callback=_duration,
        help="The longest a job's write waits for a lock, such as the job's own lock while "
        "another writer writes it. A job whose wait it cancels is skipped (db_error). 0 "
        "waits as long as it takes, whatever the role's lock_timeout.",
    ),
)


def dashboard_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of how rows are written for the dashboard, and the limits of the
    transactions that write them, given to ``command`` as one ``dashboard`` dict of
    BackfillOptions fields."""

    @functools.wraps(command)
    def with_dashboard(
        *args: Any,
        path_prefix: str,
        owner: str | None,
        input_content: bool,
        max_input_bytes: int,
        statement_timeout: str,
        lock_timeout: str,
        **kwargs: Any,
    ) -> Any:
        dashboard = {
            "path_prefix": path_prefix,
            "owner": owner,
            "input_content": input_content,
            "max_input_bytes": max_input_bytes,
            "limits": Limits(statement_timeout, lock_timeout),
        }
        return command(*args, dashboard=dashboard, **kwargs)

    decorated: Callable[..., Any] = with_dashboard
    for option in reversed(_DASHBOARD_OPTIONS):
        decorated = option(decorated)
    return decorated


def target_for(dsn: str | None, *, quiet: bool = False) -> Target:
    """The database to use; with none configured, the embedded one, said on stderr
    unless ``quiet``."""
    target = resolve_target(dsn)
    if target is None:
        home = embedded_home()
        target = start_embedded(home)
        if not quiet:
            click.echo(
                f"comsa-migrate: no database configured; using the embedded PostgreSQL in "
                f"{display_path(home)} "
                "(set --dsn, COMSA_DSN or DATABASE_URL to use your own server)",
                err=True,
            )
    return target


def target_to_read(dsn: str | None, *, quiet: bool = False) -> Target | None:
    """The database a command that only reads uses: the one configured, else the embedded
    one if a run made it, else None (none is created); said on stderr unless ``quiet``."""
    target = resolve_target(dsn)
    if target is not None:
        return target
    home = embedded_home()
    target = find_embedded(home)
    if target is not None:
        notice = (
            f"no database configured; reading the embedded PostgreSQL in {display_path(home)} "
            "(set --dsn, COMSA_DSN or DATABASE_URL to read your own server)"
        )
    else:
        notice = (
            f"no database configured, and no embedded PostgreSQL in {display_path(home)} yet "
            "(a backfill makes it): only the files are validated"
        )
    if not quiet:
        click.echo(f"comsa-migrate: {notice}", err=True)
    return target


def display_path(path: Path) -> str:
    """A path as a person would type it: under the home folder, with ~."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def connection(
    dsn: str | None, *, quiet: bool = False
) -> Iterator[tuple[psycopg.Connection[Any], Target]]:
    target = target_for(dsn, quiet=quiet)
    with connect(target) as conn:
        yield conn, target


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
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
def progress(enabled: bool, total: int) -> Iterator[tuple[Observer, ...]]:
    """The observers of a run that shows a progress bar on stderr: none when disabled."""
    if not enabled:
        yield ()
        return
    from tqdm import tqdm

    with tqdm(total=total or None, unit="job", file=sys.stderr, leave=False) as bar:
        yield (_ProgressBar(bar),)


class _ProgressBar:
    """One step of the bar per job."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def on_problem(self, problem: Problem) -> None:
        pass

    def on_job(self, result: JobResult) -> None:
        self._bar.update(1)
