"""What each job of a batch needs, decided without the database: skip, read, normalise, send.

Batches of the scan's jobs; the jobs unchanged by stat; the others read, normalised and
made into payloads; and the words of what the database did (or would do) with each, told
to an Observer. Pure over files and records: the scheduler (comsa_migrate.pipeline) runs
it, and the database's side is in comsa_migrate.db.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from comsa_migrate.core.jsonread import read_job_json
from comsa_migrate.core.layout import JobSource, ScanItem
from comsa_migrate.core.normalise import parse_job
from comsa_migrate.core.payload import WriteSettings, job_payload
from comsa_migrate.core.uploads import InlineBudget, StreamedUpload, input_contents
from comsa_migrate.observer import JobResult, Observer
from comsa_migrate.problems import Problem, Severity

__all__ = [
    "Batch",
    "Outcome",
    "Plan",
    "Reading",
    "Recorder",
    "batches",
    "prepare",
    "tell_outcome",
    "unchanged_by_stat",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the database did with one job."""

    action: str  # insert, update, unchanged, conflict or error
    rows: dict[str, int]  # rows written per table, and "owned": jobs given their owner
    message: str | None = None  # the database's reason, for "error"


@dataclass(frozen=True, slots=True)
class Plan:
    """What writing one job would do, decided by comsa_migrate.plan_job() without writing."""

    action: str  # insert, update, unchanged, conflict or error
    changes: dict[str, tuple[int, int, int]]  # per table: rows inserted, updated, deleted
    message: str | None = None  # the database's reason, for "error"

    @property
    def outcome(self) -> Outcome:
        """The outcome a write would return: rows written are inserted plus updated."""
        rows = {table: ins + upd for table, (ins, upd, _) in self.changes.items()}
        return Outcome(self.action, rows, self.message)


@dataclass(frozen=True, slots=True)
class Reading:
    """How the jobs of a run are read and made into payloads."""

    data_dir: Path
    max_json_bytes: int
    settings: WriteSettings
    force: bool = False  # trust no fingerprint: read every job


@dataclass(frozen=True, slots=True)
class Batch:
    """Jobs read and normalised, waiting for the database's decision."""

    sources: list[JobSource]
    #: None: only its files are kept (a file store's sidecar); SKIPPED: the same, for a job
    #: skipped
    payloads: list[bytes | None]
    uploads: list[tuple[StreamedUpload, ...]]  # each job's uploads sent apart from its payload


class Recorder:
    """An observer that records what it is told, to tell another observer later, in order."""

    def __init__(self) -> None:
        self._events: list[Problem | JobResult] = []

    def on_problem(self, problem: Problem) -> None:
        self._events.append(problem)

    def on_job(self, result: JobResult) -> None:
        self._events.append(result)

    def take(self) -> Recorder:
        """A new recorder with everything recorded so far; this one starts empty."""
        taken = Recorder()
        taken._events, self._events = self._events, []
        return taken

    def replay(self, observer: Observer) -> None:
        events, self._events = self._events, []
        for event in events:
            if isinstance(event, Problem):
                observer.on_problem(event)
            else:
                observer.on_job(event)


def batches(items: Iterable[ScanItem], size: int, observer: Observer) -> Iterator[list[JobSource]]:
    """The scan's jobs in batches of ``size``; its problems are told on the way."""
    batch: list[JobSource] = []
    skipped: str | None = None  # the scan gives the errors of one job in a row
    for item in items:
        if isinstance(item, Problem):
            observer.on_problem(item)
            if item.severity is Severity.ERROR and item.job_id and item.job_id != skipped:
                observer.on_job(JobResult(item.job_id, "skip", {}))  # the scan could not read it
                skipped = item.job_id
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def unchanged_by_stat(
    reading: Reading, batch: list[JobSource], recorded: Mapping[str, str]
) -> set[int]:
    """The positions in ``batch`` of the jobs unchanged since the fingerprints ``recorded``
    ({job id: fingerprint}) were written. A racy fingerprint is never trusted."""
    settings = reading.settings
    return {
        position
        for position, source in enumerate(batch)
        if not source.racy
        and recorded.get(source.job_id) == settings.fingerprint(source.fingerprint)
    }


def prepare(
    reading: Reading, batch: list[JobSource], unchanged: set[int], observer: Observer
) -> Batch | None:
    """Tell the jobs unchanged by stat (their positions in ``batch``); read and normalise
    the others. The uploads their payloads carry stay within one InlineBudget."""
    prepared = Batch([], [], [])
    budget = InlineBudget(reading.settings.inline_input_bytes)
    for position, source in enumerate(batch):
        if position in unchanged:
            observer.on_job(JobResult(source.job_id, "unchanged", {}))
            continue
        written = _read_and_normalise(reading, source, observer, budget)
        if written is not None:
            prepared.sources.append(source)
            prepared.payloads.append(written[0])
            prepared.uploads.append(written[1])
    return prepared if prepared.payloads else None


def tell_outcome(observer: Observer, source: JobSource, outcome: Outcome) -> None:
    """Tell what the database did (or would do) with one job; conflicts and errors are problems."""
    action = outcome.action
    if action == "conflict":
        observer.on_problem(
            Problem(
                "conflict",
                "the database rows were changed since comsa-migrate wrote them "
                "(or it never wrote them); left alone, --force overwrites",
                source.job_id,
                source.json_path,
            )
        )
    elif action == "error":
        observer.on_problem(
            Problem("db_error", outcome.message or "", source.job_id, source.json_path)
        )
        action = "skip"
    observer.on_job(JobResult(source.job_id, action, outcome.rows))


#: the payload of a job skipped (its JSON unreadable or invalid, an upload in error) whose
#: files a file store keeps all the same: no row is written for it, and its outcome is
#: "skip" (db/job_writes.py), so that nothing of the legacy tree is lost with its server
SKIPPED = b""
#: a job's payload (None: a sidecar whose files a file store keeps; SKIPPED), and its
#: uploads sent apart
_Written = tuple[bytes | None, tuple[StreamedUpload, ...]]


def _read_and_normalise(
    reading: Reading, source: JobSource, observer: Observer, budget: InlineBudget
) -> _Written | None:
    try:
        problems, written, action = _normalised(reading, source, budget)
    except Exception as exc:  # a bug must not cost the other jobs: this one is skipped
        log.exception("unexpected error while reading %s", source.json_path)
        problems, written, action = [_internal_error(source, exc)], None, "skip"
    for problem in problems:
        observer.on_problem(problem)
    if written is None and action == "skip" and reading.settings.file_store:
        return SKIPPED, ()  # told once its files are recorded
    if written is None:
        observer.on_job(JobResult(source.job_id, action, {}))
    return written


def _normalised(
    reading: Reading, source: JobSource, budget: InlineBudget
) -> tuple[list[Problem], _Written | None, str]:
    """(problems, what is written, or None with the job's action when nothing is: skip or
    metadata_only)."""
    data_dir, settings = reading.data_dir, reading.settings
    raw = read_job_json(data_dir, source, reading.max_json_bytes)
    if isinstance(raw, Problem):
        return [raw], None, "skip"
    parsed = parse_job(raw, source, data_dir)
    del raw  # a large JSON's bytes need not be held while its payload is made
    problems = list(parsed.problems)
    if parsed.record is None:
        kept = (None, ()) if parsed.metadata_only and settings.file_store else None
        return problems, kept, "metadata_only" if parsed.metadata_only else "skip"
    if not settings.store_inputs:
        return problems, (job_payload(parsed.record, settings), ()), "write"
    inputs, upload_problems = input_contents(data_dir, source, settings.max_input_bytes, budget)
    problems += upload_problems
    if any(p.severity is Severity.ERROR for p in upload_problems):
        return problems, None, "skip"
    payload = job_payload(parsed.record, settings, inputs.entries)
    return problems, (payload, inputs.streamed), "write"


def _internal_error(source: JobSource, exc: Exception) -> Problem:
    return Problem(
        "internal_error",
        f"{type(exc).__name__}: {exc} (a bug in comsa-migrate: please report it)",
        source.job_id,
        source.json_path,
    )
