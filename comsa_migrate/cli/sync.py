"""The sync daemon's commands: `sync` runs it, `status` reads what it recorded."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
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
    target_for,
    writers_option,
)
from comsa_migrate.core import tree
from comsa_migrate.errors import EXIT_OK
from comsa_migrate.file_store.keeping import check_file_store
from comsa_migrate.render.status import render_status
from comsa_migrate.sync.daemon import Daemon, SyncOptions
from comsa_migrate.sync.status import read_status

__all__ = ["status_command", "sync_command"]


@click.command("sync")
@click.argument("data_dir", type=click.Path(path_type=Path))
@dsn_option
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite jobs whose database rows were changed by something else (conflicts).",
)
@click.option(
    "--name",
    metavar="NAME",
    help="Name of this daemon in `status`; one daemon per name and database holds the "
    "lock. Default: the host name and the real path of DATA_DIR, so that hosts with their "
    "own DATA_DIR at the same path do not lock each other out.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="If another daemon holds the lock, wait for it instead of exiting with code 3; "
    "if another takes it while this one runs, wait for it again.",
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
@writers_option(
    "Writer connections of the catch-up scan and the rescans, and processes scanning "
    "the tree for them (see backfill --jobs); jobs synced as they change are written "
    "on one."
)
@dashboard_options
@file_store_option(
    "Also keep the contents of every job's files as they appear or change (`db`: in "
    "this database; s3://bucket/prefix: any S3 API, AWS_* variables), including the "
    "outputs and metadata sidecar of a job whose row is the dashboard's own (no row is "
    "written for it). With `restore` before the dashboard starts, a pod's data/ "
    "outlives its deploys. See docs/file-store.md."
)
def sync_command(
    data_dir: Path,
    dsn: str | None,
    name: str | None,
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
    writers: int,
    dashboard: dict[str, Any],
    file_store: str | None,
) -> int:
    """Keep PostgreSQL in step with DATA_DIR while legacy writers keep running.

    Takes a lock (one daemon per database and --name), catches up with a full
    scan (the backfill: unchanged jobs cost a stat), then watches: each new or changed
    job is synced about --debounce seconds after its last change, one transaction per
    job, by the backfill's rules (a conflict is left alone without --force). It logs
    one line per synced job, `<job id> <action> <ms> ms`, to stderr. SIGTERM or Ctrl-C
    stops it cleanly, SIGHUP rescans. `comsa-migrate status` shows how it is doing.

    \b
    Example:
      comsa-migrate sync /srv/comsa/backend/data --dsn postgresql://comsa@db/comsa_dashboard
      comsa-migrate sync /app/data --file-store db      (beside the dashboard, on its pod)

    \b
    Exit codes: 0 stopped by SIGTERM or SIGINT; 2 usage, configuration or start-up
    error; 3 another daemon holds the lock (see --wait).
    """
    log_to_stderr(daemon=True, log_format=log_format)
    options = SyncOptions(
        data_dir,
        name=name,
        force=force,
        wait=wait,
        polling=polling,
        debounce=debounce,
        settle=settle,
        rescan_interval=rescan_interval,
        metrics_port=metrics_port,
        max_json_bytes=max_json_bytes,
        batch_size=batch_size,
        writers=writers,
        file_store=file_store,
        **dashboard,
    )
    tree.check_data_dir(data_dir)  # before a server is started or connected to
    if file_store is not None:
        check_file_store(file_store)  # an object store that cannot be used: exit 2
    daemon = Daemon(target_for(dsn), options)
    with _daemon_signals(daemon):
        daemon.run()
    return EXIT_OK


@click.command("status")
@dsn_option
def status_command(dsn: str | None) -> None:
    """Show what the sync daemons recorded: state, last sync, jobs by action, lag, problems.

    Reads only. A daemon counts as running while it holds its lock and it has beaten
    within the last minute or, on this host, its process lives.

    \b
    Example:
      comsa-migrate status --dsn postgresql://comsa@db/comsa_dashboard
    """
    log_to_stderr()
    with connection(dsn) as (conn, target):
        click.echo(render_status(read_status(conn), str(target)), nl=False)


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
