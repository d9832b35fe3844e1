"""export: the jobs of the database as a legacy tree, for the legacy backend to serve again.

For each job chosen: jobs/<id>.json, written as the legacy backend wrote it
(core/legacy_json.py); uploads/<id>/…, from the file store, else from the dashboard's
job_input_files; outputs/<id>/…, from the file store. An output that job_files names but
that was never stored has no content to export: it is told (output_not_stored), not
written. Every file goes through core/tree_writer.py, as restore's do.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core.layout import JOBS, UPLOADS, job_id_of_json
from comsa_migrate.core.legacy_json import JobRow, legacy_job_json
from comsa_migrate.core.tree_summary import FileOutcome, TreeSummary
from comsa_migrate.core.tree_writer import (
    LaterFile,
    NotWritten,
    RunFault,
    TreeFile,
    TreeWriteOptions,
    TreeWriter,
    WriteItem,
    write_files,
)
from comsa_migrate.db.exported_jobs import (
    DEFAULT_BATCH,
    ExportBatch,
    JobSelection,
    count_jobs,
    export_batches,
    guarded_read,
    read_input_file,
    small_contents,
    stop_reason,
)
from comsa_migrate.db.stored_files import StoredFile, require_contents_in
from comsa_migrate.errors import RunStopped
from comsa_migrate.file_store.keeping import check_file_store
from comsa_migrate.file_store.per_thread import PerThread, StorePerThread
from comsa_migrate.problems import Problem

__all__ = ["ExportOptions", "count_jobs", "export"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What an export writes, from where, and how."""

    data_dir: Path
    store_url: str = "db"
    selection: JobSelection = field(default_factory=JobSelection)
    path_prefix: str = "data/"  # how the rows' paths begin (backfill's --path-prefix)
    write: TreeWriteOptions = field(default_factory=TreeWriteOptions)
    batch_size: int = DEFAULT_BATCH


def export(
    conn: psycopg.Connection[Any],
    options: ExportOptions,
    connect: Callable[[], psycopg.Connection[Any]],
    *,
    stop: threading.Event | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> TreeSummary:
    """Write the chosen jobs under DATA_DIR as a legacy tree; ``conn`` reads the jobs, each
    writer thread opens its own store with ``connect``. A database gone away stops the
    run: RunStopped, with the summary of what was written (and synced) until then."""
    started = time.monotonic()
    check_file_store(options.store_url)  # as restore: exit 2 before anything is written
    require_contents_in(conn, options.store_url, options.selection.ids)
    # one connection a writer thread, for its store (`db`) and the uploads it reads
    connections = PerThread(connect)
    stores = StorePerThread(options.store_url, connections.get)
    summary = TreeSummary(str(options.data_dir), stores.url, options.write.dry_run)
    writer = TreeWriter(options.data_dir, options.write)

    def items() -> Iterator[WriteItem]:
        for batch in export_batches(conn, options.selection, options.batch_size):
            known: dict[str, bytes] = {}
            if options.store_url == "db":  # small contents with their batch, in one query
                known = small_contents(conn, [f for fs in batch.stored.values() for f in fs])
            for job in batch.jobs:
                summary.jobs += 1
                yield from _files_of(job, batch, options, stores, connections, summary, known)

    def told(outcome: FileOutcome) -> None:
        summary.on_file(outcome)
        if on_file is not None:
            on_file(outcome)

    try:
        finished = write_files(writer, items(), told, stop)
    except (RunFault, psycopg.Error) as exc:  # the rows' connection: no going on
        summary.elapsed = time.monotonic() - started
        raise RunStopped(stop_reason(exc), summary) from None
    finally:
        try:
            stores.close()
        finally:
            connections.close()
    summary.interrupted = not finished
    summary.elapsed = time.monotonic() - started
    log.info("export into %s: %s", options.data_dir, summary.totals())
    return summary


def _files_of(
    job: JobRow,
    batch: ExportBatch,
    options: ExportOptions,
    stores: StorePerThread,
    connections: PerThread[psycopg.Connection[Any]],
    summary: TreeSummary,
    known: dict[str, bytes],
) -> Iterator[WriteItem]:
    stored = batch.stored.get(job.id, [])
    outputs_in_job_files = dict.fromkeys(  # in job_files' order, each once
        _relative(path, options.path_prefix) for path in batch.outputs.get(job.id, [])
    )
    # the one stored JSON to write back (db/stored_files.py chose it)
    original = next((f for f in stored if f.path.startswith(f"{JOBS}/")), None)
    # the job's files as the database has them: on disk at the last sync, or an output
    # job_files names (the dashboard's own jobs' rows are its own)
    files = [
        f
        for f in stored
        if not f.path.startswith(f"{JOBS}/") and (f.on_disk or f.path in outputs_in_job_files)
    ]
    # the JSON is made by the writer thread, which reads the original from its own store
    yield LaterFile(
        functools.partial(
            _job_json, job, original, options, stores, known, job.id in batch.migrated
        ),
        at_hand=original is None or original.sha256 in known,
    )
    for item in files:
        read = _reader(item.sha256, stores, known, job.id, item.path)
        at_hand = item.sha256 in known
        yield TreeFile(item.path, job.id, item.sha256, item.size, item.mtime_ns, read, (), at_hand)
    for name, content_b64 in batch.inputs.get(job.id, []):
        if content_b64 is None:  # not with the batch: read by the thread that writes it
            yield LaterFile(functools.partial(_read_upload, job.id, name, connections.get))
        else:
            yield LaterFile(functools.partial(_upload, job.id, name, content_b64), at_hand=True)
    paths = {item.path for item in files}
    for relative in outputs_in_job_files:
        if relative not in paths:
            summary.on_problem(
                Problem(
                    "output_not_stored",
                    "job_files names this output, but its content was never stored: "
                    "it cannot be exported",
                    job.id,
                    relative,
                )
            )


def _relative(path: str, path_prefix: str) -> str:
    """A job_files path relative to DATA_DIR."""
    return path[len(path_prefix) :] if path.startswith(path_prefix) else path


def _read_upload(
    job_id: str, name: str, connection: Callable[[], psycopg.Connection[Any]]
) -> TreeFile:
    return _upload(job_id, name, read_input_file(connection, job_id, name))


def _upload(job_id: str, name: str, content_b64: str) -> TreeFile:
    """An upload of job_input_files as the file to write; NotWritten if it is not base64."""
    path = f"{UPLOADS}/{job_id}/{name}"
    try:
        content = _decoded(content_b64)
    except (binascii.Error, ValueError) as exc:
        message = f"job_input_files holds no valid base64 for it ({exc}); not written"
        raise NotWritten("input_not_base64", message, job_id, path) from None
    digest = hashlib.sha256(content).hexdigest()
    return TreeFile(path, job_id, digest, len(content), None, functools.partial(iter, (content,)))


def _decoded(content_b64: str) -> bytes:
    """An upload's bytes; binascii.Error for a character that is not base64 (decoding
    without validate would drop it and write other bytes) or bad padding. Line breaks
    (MIME's, PostgreSQL encode()'s) are not errors."""
    if "\n" in content_b64 or "\r" in content_b64:
        content_b64 = content_b64.replace("\r", "").replace("\n", "")
    return base64.b64decode(content_b64, validate=True)


def _reader(
    sha256: str, stores: StorePerThread, known: dict[str, bytes], job_id: str, path: str
) -> Callable[[], Iterable[bytes]]:
    content = known.get(sha256)
    if content is not None:
        return functools.partial(iter, (content,))
    return functools.partial(guarded_read, functools.partial(stores.read, sha256), job_id, path)


def _job_json(
    job: JobRow,
    original: StoredFile | None,
    options: ExportOptions,
    stores: StorePerThread,
    known: dict[str, bytes],
    migrated: bool,
) -> TreeFile:
    stored: bytes | None = None
    path = f"{JOBS}/{job.id}.json"
    mtime_ns: int | None = None
    if original is not None:
        try:
            stored = b"".join(_reader(original.sha256, stores, known, job.id, original.path)())
        except KeyError:
            stored = None  # told below, as the file's own problem would be
        if stored is not None and hashlib.sha256(stored).hexdigest() != original.sha256:
            stored = None
        if job_id_of_json(original.path.partition("/")[2]) == job.id:
            path = original.path  # the name it had, in whatever case
        mtime_ns = original.mtime_ns
    try:
        made = legacy_job_json(
            job,
            stored,
            mtime_ns or 0,
            path_prefix=options.path_prefix,
            data_dir=options.data_dir,
        )
    except Exception as exc:  # a row this code does not foresee: that job alone fails
        log.debug("building the JSON of the job %s failed", job.id, exc_info=True)
        message = f"its legacy JSON could not be made ({type(exc).__name__}: {exc}); not written"
        raise NotWritten("job_json_failed", message, job.id, path) from None
    notes = made.problems
    if original is not None and stored is None:
        notes += (
            Problem(
                "original_unreadable",
                "the file store lacks the stored job JSON, or its checksum is wrong; "
                "rebuilt from the row",
                job.id,
                original.path,
            ),
        )
    if original is None and migrated:
        notes += (
            Problem(
                "original_not_stored",
                "a migrated job whose original JSON the file store does not keep: rebuilt "
                "from its row, without the fields that have no column (use_sample_data, "
                "demo_id, rerun_of, …)",
                job.id,
                path,
            ),
        )
    content = made.content
    verbatim = made.verbatim and original is not None
    # the original's bytes as they are (their sha256 was checked above) keep its mtime; a
    # rebuilt JSON gets the time of writing, or a sync --file-store would take it for the
    # stored one (same size and mtime) and never store it
    sha256 = original.sha256 if verbatim and original else hashlib.sha256(content).hexdigest()
    # the stored original at its path is the tool's own copy (the legacy tree as it was
    # migrated): replaced by the job's new JSON without --force
    earlier = original.sha256 if original is not None and original.path == path else None
    return TreeFile(
        path,
        job.id,
        sha256,
        len(content),
        mtime_ns if verbatim else None,
        functools.partial(iter, (content,)),
        notes,
        replaceable=earlier,
    )
