"""Backfill: scan the legacy tree and upsert every job, one transaction per job."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from comsa_migrate.core import tree
from comsa_migrate.db import runs
from comsa_migrate.db.faults import describe_fault
from comsa_migrate.db.grants import require_job_write_rights
from comsa_migrate.db.migrations import migrate
from comsa_migrate.db.writes import BatchStopped, give_owner
from comsa_migrate.errors import RunStopped, first_line
from comsa_migrate.file_store.keeping import check_file_store
from comsa_migrate.observer import Observer, Observers
from comsa_migrate.pipeline.options import BackfillOptions
from comsa_migrate.pipeline.scheduler import Connect, applying, run_batches
from comsa_migrate.pipeline.summary import Summary

__all__ = ["BackfillOptions", "backfill"]


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
    ``options.write.connections`` above one, ``connect`` opens the writers' connections.
    ``observers`` are told each problem and each job's action as the summary is.
    """
    started = time.monotonic()
    tree.check_data_dir(options.data_dir)
    write = options.write
    settings = write.settings(conn)  # an unknown --owner stops here, before any write
    if write.file_store is not None:  # so does a file store that cannot be used
        check_file_store(write.file_store)
    summary = Summary(migrations=migrate(conn))
    # a right missing stops the run here, before any write
    require_job_write_rights(conn, inputs=settings.store_inputs)
    summary.inputs_stored, summary.owner = settings.store_inputs, write.owner
    summary.file_store = write.file_store
    run_id = runs.start_run(conn, "backfill", str(options.data_dir))
    outcome = "failed"
    try:
        if settings.owner_id is not None:
            summary.rows["owned"] += give_owner(conn, settings.owner_id, write.limits)
        items = tree.scan(options.data_dir, workers=options.scan_processes)
        observer = Observers([summary, *observers])
        reading = write.reading(options.data_dir, settings)
        step = applying(write, run_id, options.data_dir)
        summary.interrupted = run_batches(
            conn, write, reading, items, observer, step, stop=stop, connect=connect
        )
        outcome = "interrupted" if summary.interrupted else ("ok" if summary.ok else "skipped")
    except BatchStopped as stopped:
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
        summary.stopped = describe_fault(state, first_line(exc), write.limits)
        raise RunStopped(summary.stopped, summary) from None
    finally:
        summary.elapsed = time.monotonic() - started
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                runs.finish_run(conn, run_id, outcome, summary.totals())
    return summary
