"""The one scheduler of every use: scan, skip unchanged, read, normalise, then a step that
applies (or only decides), told to the observers in the order of a plain loop.

A plain loop over the batches would scan one, check ``stop``, ask the database for the
fingerprints of its jobs, prepare it (read and normalise what changed) and write it, then
tell the outcomes. The scheduler keeps that order of telling while the steps of up to
``connections`` batches run on writer threads: the next batch is prepared, and the one
after it scanned, meanwhile. With one connection the caller's connection writes (and is
used by one thread at a time); with more, and ``connect``, each writer thread opens its
own, and the caller's connection only asks for fingerprints, in libpq's pipeline mode
where libpq has it: the server looks up one batch's fingerprints while the next is scanned.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core.layout import JobSource, ScanItem
from comsa_migrate.core.plan import (
    Batch,
    Outcome,
    Reading,
    Recorder,
    batches,
    prepare,
    tell_outcome,
    unchanged_by_stat,
)
from comsa_migrate.db.fingerprints import (
    DeferredFingerprints,
    FingerprintQuestions,
    recorded_fingerprints,
)
from comsa_migrate.db.writes import BatchStopped, apply_batch
from comsa_migrate.file_store.keeping import keep_contents
from comsa_migrate.observer import Observer
from comsa_migrate.pipeline.options import WriteOptions

__all__ = ["Connect", "Step", "applying", "run_batches"]

#: opens one more connection to the database being written
Connect = Callable[[], psycopg.Connection[Any]]
#: what is done with a prepared batch on a writer's connection (None: the caller gave
#: none, as a report offline): the outcome of each of its jobs, in order
Step = Callable[[psycopg.Connection[Any] | None, Batch], list[Outcome]]


def applying(options: WriteOptions, run_id: int | None, data_dir: Path) -> Step:
    """The step that writes: each job of the batch in its own transaction, after its
    files' contents are in the file store, when there is one."""

    def apply(conn: psycopg.Connection[Any] | None, batch: Batch) -> list[Outcome]:
        assert conn is not None
        stored: Sequence[bytes | None] = ()
        if options.file_store is not None:
            stored = keep_contents(
                conn, options.file_store, data_dir, options.limits, batch.sources
            )
        return apply_batch(
            conn,
            batch.payloads,
            batch.uploads,
            force=options.force,
            run_id=run_id,
            limits=options.limits,
            stored=stored,
        )

    return apply


def run_batches(
    conn: psycopg.Connection[Any] | None,
    options: WriteOptions,
    reading: Reading,
    items: Iterable[ScanItem],
    observer: Observer,
    step: Step,
    *,
    stop: threading.Event | None = None,
    connect: Connect | None = None,
) -> bool:
    """Take the jobs of ``items`` through ``step``; True when ``stop`` ended it early.

    ``conn`` gives the fingerprints recorded (None: none to trust, every job is read) and,
    unless ``options.connections`` is above one and ``connect`` is given, is the writer.
    Every batch prepared is stepped through and told, as in a plain loop; a stop is
    heard between the scan of a batch and its preparation.
    """
    own = options.connections > 1 and connect is not None
    writers = options.connections if own else 1
    with contextlib.ExitStack() as stack:  # left in reverse: questions, writers, connections
        writer_conn = _own_connections(stack, connect) if own and connect else lambda: conn
        pool = stack.enter_context(
            ThreadPoolExecutor(writers, thread_name_prefix="comsa-migrate-write")
        )
        questions = _questions(stack, conn, options, reading, pipelined=own)
        schedule = _Schedule(reading, observer, step, pool, writer_conn, questions, writers)
        return schedule.run(batches(items, options.batch_size, schedule.found), stop)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


@dataclass
class _ScheduledBatch:
    """One batch in the order of the telling: what its scan told, what preparing it told,
    then the outcomes of its step."""

    scanned: Recorder
    prepared: Recorder = field(default_factory=Recorder)
    batch: Batch | None = None
    outcomes: Future[list[Outcome]] | None = None

    def tell_found(self, observer: Observer, stop: threading.Event | None) -> bool:
        """Tell what scanning and preparing it found, unless a stop was asked by the end of
        its scan's telling, where a plain loop hears it: then False, and nothing more."""
        self.scanned.replay(observer)
        if stop is not None and stop.is_set():
            return False
        self.prepared.replay(observer)
        return True

    def tell(self, observer: Observer) -> None:
        self.scanned.replay(observer)
        self.prepared.replay(observer)
        if self.batch is None or self.outcomes is None:
            return
        try:
            outcomes = self.outcomes.result()
        except BatchStopped as stopped:  # tell the jobs committed before the fault
            for source, outcome in zip(self.batch.sources, stopped.outcomes, strict=True):
                if outcome is not None:
                    tell_outcome(observer, source, outcome)
            raise
        for source, outcome in zip(self.batch.sources, outcomes, strict=True):
            tell_outcome(observer, source, outcome)


#: asks for the fingerprints recorded for a batch's jobs: at once, or ahead of the answer
_Questions = Callable[[list[JobSource]], DeferredFingerprints]


class _Schedule:
    """run_batches() in motion: the batch prepared last waits in ``ready`` while the
    ones before it are stepped through and told, oldest first."""

    def __init__(
        self,
        reading: Reading,
        observer: Observer,
        step: Step,
        pool: ThreadPoolExecutor,
        writer_conn: Callable[[], psycopg.Connection[Any] | None],
        questions: tuple[_Questions, bool],
        writers: int,
    ) -> None:
        self.reading, self.observer, self.step = reading, observer, step
        self.pool, self.writer_conn, self.writers = pool, writer_conn, writers
        self.ask, self.ask_ahead = questions
        self.found = Recorder()  # what the scan tells, told in its turn
        self.in_flight: deque[_ScheduledBatch] = deque()  # sent to a writer, in order
        self.ready: _ScheduledBatch | None = None  # prepared, not yet sent
        self.preparing: _ScheduledBatch | None = None  # being prepared
        self.write_failed = False  # a step failed: nothing more is sent, nor told after it

    def run(self, scanned: Iterator[list[JobSource]], stop: threading.Event | None) -> bool:
        interrupted = False
        try:
            batch = next(scanned, None)
            question = self._ask_ahead(batch)
            while batch is not None:
                turn = _ScheduledBatch(self.found.take())
                if stop is not None and stop.is_set():  # scanned, not yet prepared
                    interrupted = True
                    self.send()
                    self.in_flight.append(turn)
                    break
                recorded = self._answer(question, batch)
                self.send()  # the batch prepared before: a writer is free to take it
                self.preparing = turn
                unchanged = unchanged_by_stat(self.reading, batch, recorded)
                turn.batch = prepare(self.reading, batch, unchanged, turn.prepared)
                self.ready, self.preparing = turn, None
                batch = next(scanned, None)  # the next scan, while the writers write
                question = self._ask_ahead(batch)
                self.tell(keep=self.writers - 1)
                if not self.in_flight and not turn.tell_found(self.observer, stop):
                    self.ready = None  # a plain loop stopped before preparing it
                    return True
        except Exception:
            if not self.write_failed:
                self.send()  # a plain loop wrote the batch prepared before the failure
                self.tell_all_quietly()
                if self.preparing is not None:
                    self.preparing.tell(self.observer)
                self.found.replay(self.observer)
            raise
        except BaseException:
            self.ready = None
            self.tell_all_quietly()
            raise
        self.send()
        self.tell(keep=0)
        self.found.replay(self.observer)
        return interrupted

    def send(self) -> None:
        """Hand the prepared batch, if any, to a writer."""
        if self.ready is None:
            return
        turn, self.ready = self.ready, None
        if turn.batch is not None:
            turn.outcomes = self.pool.submit(self._step, turn.batch)
        self.in_flight.append(turn)

    def tell(self, *, keep: int) -> None:
        """Tell the batches sent, oldest first, until ``keep`` are left in flight; a
        failure is raised once what is still in flight has been told."""
        try:
            while len(self.in_flight) > keep:
                self.in_flight.popleft().tell(self.observer)
        except BaseException:
            self.write_failed = True
            self.ready = None  # the run fails: what was prepared is not sent
            self.tell_all_quietly()
            raise

    def tell_all_quietly(self) -> None:
        """What is in flight gets written all the same: tell what can be told."""
        while self.in_flight:
            with contextlib.suppress(Exception):
                self.in_flight.popleft().tell(self.observer)

    def _answer(
        self, question: DeferredFingerprints | None, batch: list[JobSource]
    ) -> dict[str, str]:
        """The fingerprints recorded for ``batch``: the answer to the question asked
        ahead, or one asked now. If the database fails to answer, nothing more is sent."""
        try:
            return (question or self.ask(batch))()
        except BaseException:
            self.write_failed = True
            self.ready = None
            self.tell_all_quietly()
            raise

    def _step(self, batch: Batch) -> list[Outcome]:
        return self.step(self.writer_conn(), batch)

    def _ask_ahead(self, batch: list[JobSource] | None) -> DeferredFingerprints | None:
        return None if batch is None or not self.ask_ahead else self.ask(batch)


def _own_connections(
    stack: contextlib.ExitStack, connect: Connect
) -> Callable[[], psycopg.Connection[Any]]:
    """Each writer thread's own connection, opened on its first batch, closed at the end."""
    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def writer_conn() -> psycopg.Connection[Any]:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
            with lock:
                opened.append(conn)
        return conn

    @stack.callback
    def close() -> None:
        for conn in opened:
            conn.close()

    return writer_conn


def _questions(
    stack: contextlib.ExitStack,
    conn: psycopg.Connection[Any] | None,
    options: WriteOptions,
    reading: Reading,
    *,
    pipelined: bool,
) -> tuple[_Questions, bool]:
    """How the fingerprints are asked for, and whether ahead of their answers.

    Ahead only when ``conn`` writes nothing and libpq has pipeline mode; else each
    question is answered at once, when the batch is about to be prepared (and nothing
    else uses ``conn``).
    """
    if conn is None or reading.force:  # no fingerprint to trust

        def nothing(batch: list[JobSource]) -> DeferredFingerprints:
            return dict

        return nothing, False
    if pipelined and psycopg.Pipeline.is_supported():
        fingerprints = stack.enter_context(FingerprintQuestions(conn, options.limits))
        return lambda batch: fingerprints.ask([s.job_id for s in batch]), True

    def at_once(batch: list[JobSource]) -> DeferredFingerprints:
        return recorded_fingerprints(conn, [s.job_id for s in batch], options.limits)

    return at_once, False
