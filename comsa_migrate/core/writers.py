"""Several writer connections for one migration: each writes whole batches, in parallel.

One connection uses one server backend, so one core of the database server. With
``--jobs N`` the batches go to N connections; this thread keeps scanning, reading and
normalising, and tells the observer what happened in the order one writer would have
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

from comsa_migrate.core import store
from comsa_migrate.core.layout import JobSource, ScanItem
from comsa_migrate.core.pipeline import (
    Batch,
    Held,
    apply,
    batches,
    prepare,
    tell_outcomes,
    unchanged_by_stat,
)
from comsa_migrate.core.summary import Observer

if TYPE_CHECKING:
    from comsa_migrate.core.backfill import BackfillOptions

__all__ = ["Connect", "migrate_in_parallel"]

#: opens one more connection to the database being written
Connect = Callable[[], psycopg.Connection[Any]]


#: a batch scanned: its jobs, what scanning it told, and its fingerprints being compared
_Scanned = tuple[list[JobSource], Held, Future[set[int]]]


@dataclass
class _Turn:
    """One batch in the order of the telling: what finding it told, then its outcomes."""

    told: Held
    batch: Batch | None
    writing: Future[list[store.Outcome]] | None


def migrate_in_parallel(
    conn: psycopg.Connection[Any],
    connect: Connect,
    writers: int,
    options: BackfillOptions,
    settings: store.WriteSettings,
    items: Iterable[ScanItem],
    observer: Observer,
    run_id: int | None,
    stop: threading.Event | None,
) -> bool:
    """migrate_jobs() with ``writers`` connections of its own; ``conn`` reads fingerprints.

    True when ``stop`` ended it before the last batch.

    At most ``writers`` batches are in flight; the next is prepared, and the one after it
    scanned while its fingerprints are compared with the recorded ones. A stop ends the
    scan; the batches in flight on every connection are finished and told.
    """
    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    opened_lock = threading.Lock()

    def write(batch: Batch) -> list[store.Outcome]:
        writer = getattr(local, "conn", None)
        if writer is None:
            writer = local.conn = connect()
            with opened_lock:
                opened.append(writer)
            store.prepare_session(writer)
        return apply(writer, options, batch, run_id)

    def unchanged(batch: list[JobSource]) -> set[int]:
        return unchanged_by_stat(conn, options, settings, batch)

    def tell(turn: _Turn) -> None:
        turn.told.replay(observer)
        if turn.batch is not None and turn.writing is not None:
            tell_outcomes(observer, turn.batch, turn.writing.result())

    held = Held()
    interrupted = False
    turns: deque[_Turn] = deque()

    def prepare_and_send(scanned: _Scanned) -> bool:
        """Prepare a scanned batch and hand it to a writer; False once a stop is asked."""
        nonlocal interrupted
        batch, told, unchanged_in_batch = scanned
        if stop is not None and stop.is_set():  # scanned, not yet prepared
            interrupted = True
            turns.append(_Turn(told, None, None))
            return False
        prepared = prepare(options, settings, batch, unchanged_in_batch.result(), told)
        writing = None if prepared is None else pool.submit(write, prepared)
        turns.append(_Turn(told, prepared, writing))
        while len(turns) > writers:
            tell(turns.popleft())
        return True

    try:
        with (
            ThreadPoolExecutor(writers, thread_name_prefix="comsa-migrate-write") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="comsa-migrate-lookup") as lookup,
        ):
            try:
                waiting: _Scanned | None = None  # scanned; its fingerprints being compared
                for batch in batches(items, options.batch_size, held):
                    # this batch's fingerprints are compared while the next one is scanned
                    scanned = (batch, held.take(), lookup.submit(unchanged, batch))
                    if waiting is not None and not prepare_and_send(waiting):
                        turns.append(_Turn(scanned[1], None, None))
                        waiting = None
                        break
                    waiting = scanned
                if waiting is not None:
                    prepare_and_send(waiting)
            except BaseException:
                # what is in flight gets written all the same: tell what can be told
                for turn in turns:
                    with contextlib.suppress(Exception):
                        tell(turn)
                held.replay(observer)
                raise
            while turns:
                tell(turns.popleft())
            held.replay(observer)
    finally:
        for writer in opened:
            writer.close()
    return interrupted
