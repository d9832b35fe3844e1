"""The file store's own command: `gc`."""

from __future__ import annotations

import re
from datetime import timedelta

import click

from comsa_migrate.cli.logs import log_to_stderr
from comsa_migrate.cli.options import connection, dsn_option, file_store_option
from comsa_migrate.file_store.gc import collect_garbage
from comsa_migrate.render.store_check import gc_text

__all__ = ["gc_command"]

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|min|h|d)")
_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    match = _AGE.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not an age such as 0s, 30min, 1h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@click.command("gc")
@dsn_option
@file_store_option("The store to clean: `db` or s3://bucket/prefix (required).")
@click.option("--yes", is_flag=True, help="Delete; without it, only say what would go.")
@click.option(
    "--min-age",
    default="1h",
    show_default=True,
    callback=_age,
    metavar="AGE",
    help="Spare contents stored less than AGE ago (0s, 30min, 1h, 7d): a run puts a "
    "content just before the transaction that names it commits.",
)
def gc_command(dsn: str | None, file_store: str | None, yes: bool, min_age: timedelta) -> None:
    """Delete the contents of the file store that no stored file names.

    A content loses its last name when its file changes (the new content is stored
    beside it); a file removed from disk keeps its name, and so its last content.
    Nothing but gc ever deletes a content, and gc deletes nothing without --yes.

    \b
    Example:
      comsa-migrate gc --file-store db                   (what would go)
      comsa-migrate gc --file-store db --yes
      comsa-migrate gc --file-store s3://comsa/files --yes --min-age 7d
    """
    log_to_stderr()
    if file_store is None:
        raise click.UsageError("--file-store is required: the store to clean")
    with connection(dsn) as (conn, _):
        click.echo(gc_text(collect_garbage(conn, file_store, delete=yes, min_age=min_age)))
