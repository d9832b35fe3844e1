"""restore: every file the file store keeps, back to its place under DATA_DIR.

Each row of comsa_migrate.stored_files names a job's file (jobs/<id>.json, uploads/<id>/…,
outputs/<id>/…) and the content it had when it was last read; that content is written to
that path, checked against its sha256, atomically, with the mtime it had. A file removed
from disk since (on_disk false) comes back too, with its last content. Made to run as a
pod's init step, before the dashboard starts on an empty data/.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core.tree_summary import FileOutcome, TreeSummary
from comsa_migrate.core.tree_writer import (
    RunFault,
    TreeFile,
    TreeWriteOptions,
    TreeWriter,
    write_files,
)
from comsa_migrate.db.exported_jobs import guarded_read, small_contents, stop_reason
from comsa_migrate.db.stored_files import count_stored_files, require_contents_in, stored_files
from comsa_migrate.errors import RunStopped
from comsa_migrate.file_store.keeping import check_file_store
from comsa_migrate.file_store.per_thread import StorePerThread

__all__ = ["MISSING_CODES", "RestoreOptions", "count_files", "restore"]

log = logging.getLogger(__name__)

#: what --missing-ok tells as a warning
MISSING_CODES = frozenset({"stored_content_missing", "stored_content_corrupt"})
#: stored files read, and their small contents fetched, at a time
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class RestoreOptions:
    """What a restore writes, from where, and how."""

    data_dir: Path
    store_url: str = "db"
    jobs: tuple[str, ...] = ()  # lower-case UUIDs; none: every job
    write: TreeWriteOptions = field(default_factory=TreeWriteOptions)
    #: a content missing from the store, or corrupt, is a warning: its file is not written,
    #: yet the run is ok (a pod's init step, which one lost content must not keep down)
    missing_ok: bool = False


def count_files(conn: psycopg.Connection[Any], options: RestoreOptions) -> int:
    """How many files a restore looks at (for a progress bar)."""
    return count_stored_files(conn, options.jobs)


def restore(
    conn: psycopg.Connection[Any],
    options: RestoreOptions,
    connect: Callable[[], psycopg.Connection[Any]],
    *,
    stop: threading.Event | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> TreeSummary:
    """Write the stored files of ``options.jobs`` (every job's with none) under DATA_DIR.

    ``conn`` reads stored_files; each writer thread opens its own store with ``connect``.
    A database gone away stops the run: RunStopped, with the summary of what was written
    (and synced) until then.
    """
    started = time.monotonic()
    # a store that cannot be used, or that holds none of these files, is exit 2 before
    # anything is written, --missing-ok or not: not a tree restored empty
    check_file_store(options.store_url)
    require_contents_in(conn, options.store_url, options.jobs)
    stores = StorePerThread(options.store_url, connect)
    summary = TreeSummary(
        str(options.data_dir),
        stores.url,
        options.write.dry_run,
        tolerated=MISSING_CODES if options.missing_ok else frozenset(),
    )
    writer = TreeWriter(options.data_dir, options.write)
    jobs: set[str] = set()

    def items() -> Iterator[TreeFile]:
        for batch in stored_files(conn, options.jobs, _BATCH):
            # the `db` store's small contents come with their batch, in one query
            known = small_contents(conn, batch) if options.store_url == "db" else {}
            for stored in batch:
                jobs.add(stored.job_id)
                content = known.get(stored.sha256)
                if content is not None:
                    read: Callable[[], Iterable[bytes]] = functools.partial(iter, (content,))
                else:
                    read = functools.partial(
                        guarded_read,
                        functools.partial(stores.read, stored.sha256),
                        stored.job_id,
                        stored.path,
                    )
                yield TreeFile(
                    stored.path,
                    stored.job_id,
                    stored.sha256,
                    stored.size,
                    stored.mtime_ns,
                    read,
                    at_hand=content is not None,
                )

    def told(outcome: FileOutcome) -> None:
        summary.on_file(outcome)
        if on_file is not None:
            on_file(outcome)

    finished = False
    try:
        finished = write_files(writer, items(), told, stop)
    except (RunFault, psycopg.Error) as exc:  # the rows' connection: no going on
        summary.jobs = len(jobs)
        summary.elapsed = time.monotonic() - started
        raise RunStopped(stop_reason(exc), summary) from None
    finally:
        stores.close()
    summary.jobs = len(jobs)
    summary.interrupted = not finished
    summary.elapsed = time.monotonic() - started
    log.info("restore of %s: %s", options.data_dir, summary.totals())
    return summary
