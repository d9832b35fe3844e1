"""Backfill: scan the legacy tree and upsert every job, one transaction per job."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core import store, tree
from comsa_migrate.core.pipeline import migrate_jobs
from comsa_migrate.core.summary import Observer, Observers, Summary
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES, DEFAULT_MAX_INPUT_BYTES
from comsa_migrate.core.writers import Connect
from comsa_migrate.db import runs
from comsa_migrate.db.faults import DEFAULT_LIMITS, Limits, describe_fault
from comsa_migrate.db.migrations import migrate
from comsa_migrate.errors import RunStopped, first_line
from comsa_migrate.file_store.keeping import check_file_store

__all__ = ["BackfillOptions", "backfill"]

DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_SIZE = 200
#: the dashboard runs in backend/ and writes every path as data/...
DEFAULT_PATH_PREFIX = "data/"
#: writer connections of a backfill (--jobs)
DEFAULT_WRITERS = 2


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    data_dir: Path
    force: bool = False
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    batch_size: int = DEFAULT_BATCH_SIZE
    #: DATA_DIR as the dashboard's working folder (backend/) sees it; "" for DATA_DIR itself
    path_prefix: str = DEFAULT_PATH_PREFIX
    input_content: bool = True  # copy uploads into job_input_files, where it exists
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    #: larger uploads are not carried inside their job's payload but streamed apart
    inline_input_bytes: int = DEFAULT_INLINE_INPUT_BYTES
    owner: str | None = None  # e-mail of the dashboard user given the jobs nobody owns
    #: writer connections (--jobs); more than one needs a way to open them (``connect``)
    writers: int = DEFAULT_WRITERS
    limits: Limits = DEFAULT_LIMITS  # the tool's own limits, whatever the role's are
    #: --file-store: where the contents of the jobs' files are kept (file_store/), or None
    file_store: str | None = None

    def settings(self, conn: psycopg.Connection[Any] | None) -> store.WriteSettings:
        """How this run writes to ``conn``; ConfigurationError for an --owner not found."""
        return store.write_settings(
            conn,
            self.path_prefix,
            input_content=self.input_content,
            max_input_bytes=self.max_input_bytes,
            owner=self.owner,
            inline_input_bytes=self.inline_input_bytes,
            file_store=self.file_store,
        )


def backfill(
    conn: psycopg.Connection[Any],
    options: BackfillOptions,
    *,
    stop: threading.Event | None = None,
    observers: Iterable[Observer] = (),
    connect: Connect | None = None,
) -> Summary:
    """Migrate every job under ``options.data_dir``; apply pending migrations first.

    The data folder is checked before the database is touched. Unchanged jobs are
    recognised from stat alone. ``stop`` ends the run between batches (each job already
    written stays written) and marks the summary interrupted. A database lost part-way
    raises RunStopped with the summary of what was written. The run is recorded as ok,
    skipped, interrupted or failed: never ok when it did not finish. With
    ``options.writers`` above one, ``connect`` opens the writers' connections.
    ``observers`` are told each problem and each job's action as the summary is.
    """
    started = time.monotonic()
    tree.check_data_dir(options.data_dir)
    settings = options.settings(conn)  # an unknown --owner stops here, before any write
    if options.file_store is not None:  # so does a file store that cannot be used
        check_file_store(options.file_store)
    summary = Summary(migrations=migrate(conn))
    summary.inputs_stored, summary.owner = settings.store_inputs, options.owner
    summary.file_store = options.file_store
    run_id = runs.start_run(conn, "backfill", str(options.data_dir))
    outcome = "failed"
    try:
        if settings.owner_id is not None:
            summary.rows["owned"] += store.give_owner(conn, settings.owner_id, options.limits)
        items = tree.scan(options.data_dir, workers=options.writers)
        observer = Observers([summary, *observers])
        summary.interrupted = migrate_jobs(
            conn, options, items, observer, run_id, stop, settings=settings, connect=connect
        )
        outcome = "interrupted" if summary.interrupted else ("ok" if summary.ok else "skipped")
    except store.BatchStopped as stopped:
        summary.stopped = stopped.cause
        if not stopped.counted:
            summary.stopped += " (the jobs of the batch being written then are not counted)"
        raise RunStopped(summary.stopped, summary) from None
    except psycopg.Error as exc:  # each job's own refusals are caught server-side: the run ends
        if isinstance(exc, psycopg.errors.InsufficientPrivilege) and not any(summary.rows.values()):
            raise  # nothing written yet: the missing right is the whole story
        # a writer's connection may be the one lost, while this one has not noticed yet
        lost = conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError)
        state = None if lost else exc.sqlstate  # None: the words for a connection lost
        summary.stopped = describe_fault(state, first_line(exc), options.limits)
        raise RunStopped(summary.stopped, summary) from None
    finally:
        summary.elapsed = time.monotonic() - started
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                runs.finish_run(conn, run_id, outcome, summary.totals())
    return summary
