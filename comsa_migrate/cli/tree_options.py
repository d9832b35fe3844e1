"""What restore and export share on the command line: their options, the progress bar, and
the exit code of a tree written."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from comsa_migrate.core.tree_summary import FileOutcome, TreeSummary
from comsa_migrate.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED

__all__ = ["file_progress", "show_progress", "tree_exit_code", "tree_options"]

_OPTIONS = (
    click.option(
        "--file-store",
        "file_store",
        metavar="URL",
        default="db",
        show_default=True,
        help="Where the contents are: db (the database's own comsa_migrate tables) or "
        "s3://bucket/prefix, as the backfill or sync that stored them was given.",
    ),
    click.option(
        "--job",
        "job",
        multiple=True,
        metavar="ID",
        help="Only this job (its UUID). Repeatable.",
    ),
    click.option(
        "--force",
        is_flag=True,
        help="Replace a file that is already there with other content (by default it is "
        "left alone, and counted).",
    ),
    click.option(
        "--threads",
        type=click.IntRange(1, 64),
        default=4,
        show_default=True,
        help="Threads writing the files read from the store, each on a connection of its "
        "own (contents already at hand, as the db store's small ones, are written by one).",
    ),
    click.option(
        "--fsync",
        type=click.Choice(["end", "each", "none"]),
        default="end",
        show_default=True,
        help="end: one sync of the file system when done (a crash mid-run may leave a file "
        "empty at its name; a rerun with --force replaces it). each: every file fsynced "
        "before its rename, whole at its name even after a crash (slower). none: no sync.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar, and no notice on stderr."),
)


def tree_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a command that writes a legacy tree."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


@contextlib.contextmanager
def file_progress(
    enabled: bool, total: int | None, also: Callable[[FileOutcome], None] | None = None
) -> Iterator[Callable[[FileOutcome], None]]:
    """What to call for each file: a step of a progress bar on stderr (when ``enabled``),
    and ``also``."""
    if not enabled:
        yield also or (lambda outcome: None)
        return
    from tqdm import tqdm

    with tqdm(total=total or None, unit="file", file=sys.stderr, leave=False) as bar:

        def step(outcome: FileOutcome) -> None:
            bar.update(1)
            if also is not None:
                also(outcome)

        yield step


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def tree_exit_code(summary: TreeSummary) -> int:
    """0 every file in place; 1 some file not written (a problem) or left alone; 130
    interrupted."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_SKIPPED
