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
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    tell_written,
    unchanged_by_stat,
)
from comsa_migrate.core.summary import Observer
from comsa_migrate.db.fingerprints import FingerprintQuestions

if TYPE_CHECKING:
    from comsa_migrate.core.backfill import BackfillOptions

__all__ = ["Connect", "migrate_in_parallel"]

#: opens one more connection to the database being written
Connect = Callable[[], psycopg.Connection[Any]]


#: a batch scanned: its jobs, what scanning it told, and the jobs unchanged by stat, to be
#: read from the server's answer
_Scanned = tuple[list[JobSource], Held, Callable[[], set[int]]]


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
    scanned while its recorded fingerprints are looked up. A stop ends the scan; the
    batches in flight on every connection are finished and told.
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
        return apply(writer, options, batch, run_id)

    def tell(turn: _Turn) -> None:
        turn.told.replay(observer)
        if turn.batch is not None and turn.writing is not None:
            tell_written(observer, turn.batch, turn.writing)

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
        prepared = prepare(options, settings, batch, unchanged_in_batch(), told)
        writing = None if prepared is None else pool.submit(write, prepared)
        turns.append(_Turn(told, prepared, writing))
        while len(turns) > writers:
            tell(turns.popleft())
        return True

    try:
        with (
            ThreadPoolExecutor(writers, thread_name_prefix="comsa-migrate-write") as pool,
            _questions(conn, options) as ask,
        ):
            try:
                waiting: _Scanned | None = None  # scanned; its fingerprints being looked up
                for batch in batches(items, options.batch_size, held):
                    # the answer for the batch before was due by the end of this scan; its
                    # query went first, and reading it never waits for this batch's
                    told = held.take()
                    if waiting is not None and not prepare_and_send(waiting):
                        turns.append(_Turn(told, None, None))
                        waiting = None
                        break
                    waiting = (batch, told, unchanged_by_stat(ask, options, settings, batch))
                if waiting is not None:
                    prepare_and_send(waiting)
                while turns:
                    tell(turns.popleft())
            except BaseException:
                # what is in flight gets written all the same: tell what can be told
                for turn in turns:
                    with contextlib.suppress(Exception):
                        tell(turn)
                held.replay(observer)
                raise
            held.replay(observer)
    finally:
        for writer in opened:
            writer.close()
    return interrupted


@contextlib.contextmanager
def _questions(
    conn: psycopg.Connection[Any], options: BackfillOptions
) -> Iterator[Callable[[Sequence[str]], store.Answer]]:
    """Fingerprint questions on ``conn`` in libpq's pipeline mode, where libpq has it: a
    question is sent without waiting for its answer, so the server looks up one batch's
    fingerprints while the next batch is scanned. Without it, each is answered at once."""
    if not psycopg.Pipeline.is_supported():
        yield lambda job_ids: store.recorded_fingerprints(conn, job_ids, options.limits)
        return
    with FingerprintQuestions(conn, options.limits) as questions:
        yield questions.ask
