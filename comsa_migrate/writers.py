"""Several writer connections for one migration: each writes whole batches, in parallel.

One connection uses one server backend, so one core of the database server. With
``--jobs N`` the batches go to N connections; this thread keeps scanning, reading and
normalising, and tells the summary what happened in the order one writer would have
told it: each batch's scan and preparation, then its outcomes, batch after batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from . import store, tree

if TYPE_CHECKING:
    from .backfill import BackfillOptions, JobResult, Summary, _Batch, _Held

__all__ = ["Connect", "migrate_in_parallel"]

#: opens one more connection to the database being written
Connect = Callable[[], psycopg.Connection[Any]]


@dataclass
class _Turn:
    """One batch in the order of the telling: what finding it told, then its outcomes."""

    told: _Held
    batch: _Batch | None
    writing: Future[list[store.Outcome]] | None


def migrate_in_parallel(
    conn: psycopg.Connection[Any],
    connect: Connect,
    writers: int,
    options: BackfillOptions,
    settings: store.WriteSettings,
    items: Iterable[tree.ScanItem],
    summary: Summary,
    run_id: int | None,
    stop: threading.Event | None,
    on_job: Callable[[JobResult], None] | None,
) -> None:
    """migrate_jobs() with ``writers`` connections of its own; ``conn`` reads fingerprints.

    At most ``writers`` batches are in flight and one more is prepared. A stop ends the
    scan; the batches in flight on every connection are finished and told.
    """
    from .backfill import _apply, _batches, _Held, _known_fingerprints, _prepare, _record_outcomes

    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    opened_lock = threading.Lock()

    def write(batch: _Batch) -> list[store.Outcome]:
        writer = getattr(local, "conn", None)
        if writer is None:
            writer = local.conn = connect()
            with opened_lock:
                opened.append(writer)
            store.prepare_session(writer)
        return _apply(writer, options, batch, run_id)

    def tell(turn: _Turn) -> None:
        turn.told.replay(summary, on_job)
        if turn.batch is not None and turn.writing is not None:
            _record_outcomes(summary, on_job, turn.batch, turn.writing.result())

    held = _Held()
    turns: deque[_Turn] = deque()
    try:
        with ThreadPoolExecutor(writers, thread_name_prefix="comsa-migrate-write") as pool:
            try:
                for batch in _batches(items, options.batch_size, held):
                    if stop is not None and stop.is_set():  # scanned, not yet prepared
                        summary.interrupted = True
                        break
                    known = _known_fingerprints(conn, options, batch)
                    told = held.take()
                    prepared = _prepare(options, settings, batch, known, told)
                    writing = None if prepared is None else pool.submit(write, prepared)
                    turns.append(_Turn(told, prepared, writing))
                    while len(turns) > writers:
                        tell(turns.popleft())
            except BaseException:
                # what is in flight gets written all the same: tell what can be told
                for turn in turns:
                    with contextlib.suppress(Exception):
                        tell(turn)
                held.replay(summary, on_job)
                raise
            while turns:
                tell(turns.popleft())
            held.replay(summary, on_job)
    finally:
        for writer in opened:
            writer.close()
