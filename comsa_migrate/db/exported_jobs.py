"""The reads of export (and restore's contents): jobs with everything a legacy tree needs of
them, a batch of jobs at a time in a few set-based queries (never a query per job). The
file store's records of their files are db/stored_files.py's."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from comsa_migrate.core.legacy_json import JobRow
from comsa_migrate.core.normalise import LogEntry
from comsa_migrate.core.tree_writer import NotWritten, RunFault
from comsa_migrate.db.stored_files import EXPORTED_FILES_OF, FIRST_ID, StoredFile
from comsa_migrate.db.writes import table_exists
from comsa_migrate.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    FileStoreError,
    first_line,
)

__all__ = [
    "ExportBatch",
    "JobSelection",
    "count_jobs",
    "export_batches",
    "guarded_read",
    "job_ids",
    "read_input_file",
    "small_contents",
    "stop_reason",
]

DEFAULT_BATCH = 500


@dataclass(frozen=True, slots=True)
class JobSelection:
    """Which jobs: all, those named (``ids``), those touched since ``since``."""

    ids: tuple[str, ...] = ()
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """Everything a batch of jobs needs to be written as a legacy tree."""

    jobs: list[JobRow]
    stored: dict[str, list[StoredFile]]  # by job id
    #: job_input_files not stored: (filename, base64, or None to be read by read_input_file())
    inputs: dict[str, list[tuple[str, str | None]]]
    outputs: dict[str, list[str]]  # job_files output paths, as the rows hold them
    migrated: frozenset[str] = frozenset()  # ids of the jobs a backfill wrote from a JSON


def job_ids(values: Sequence[str]) -> tuple[str, ...]:
    """``--job`` values as lower-case UUIDs; ConfigurationError for one that is not."""
    ids = []
    for value in values:
        try:
            ids.append(str(uuid.UUID(value)))
        except ValueError:
            raise ConfigurationError(f"--job {value!r} is not a job id (a UUID)") from None
    return tuple(ids)


#: the jobs chosen: all, the ones named, or the ones created, run or logged since a time
_CHOSEN = """
WHERE (%(ids)s::uuid[] IS NULL OR j.id = ANY(%(ids)s::uuid[]))
  AND (%(since)s::timestamp IS NULL
       OR j.created_at >= %(since)s OR j.started_at >= %(since)s
       OR j.completed_at >= %(since)s
       OR EXISTS (SELECT FROM public.job_logs l
                  WHERE l.job_id = j.id AND l.timestamp >= %(since)s))
"""
#: the chosen jobs in id order, from after a given id (keyset pagination)
_JOBS = (
    """
SELECT j.id::text, j.type, j.status, j.algorithm, j.age_group, j.country,
       j.calib_model_type, j.ensemble, j.created_at, j.started_at, j.completed_at,
       j.error, j.result, j.input_file_path
FROM public.jobs j"""
    + _CHOSEN
    + "  AND j.id > %(after)s::uuid ORDER BY j.id LIMIT %(limit)s"
)
_COUNT = "SELECT count(*) FROM public.jobs j" + _CHOSEN
#: the dashboard reads a job's log ORDER BY timestamp; the id orders lines of one time
_LOGS = (
    "SELECT job_id::text, timestamp, message FROM public.job_logs"
    " WHERE job_id = ANY(%s::uuid[]) ORDER BY job_id, timestamp, id"
)
_OUTPUTS = (
    "SELECT job_id::text, file_path FROM public.job_files"
    " WHERE job_id = ANY(%s::uuid[]) AND file_type = 'output' ORDER BY job_id, id"
)
#: the jobs written from a legacy JSON (by a backfill or the daemon), not by the dashboard
_MIGRATED = "SELECT job_id::text FROM comsa_migrate.job_state WHERE job_id = ANY(%s::uuid[])"
#: the dashboard's copies of uploads, for the ones the file store does not hold (it names
#: an upload by its base name, which the store may hold deeper in the job's folder, or in
#: a folder named in capitals; one removed from disk is not exported from there): the base64
#: of the small ones comes with the batch, in order, until their running total passes the
#: budget; the others (NULL here) are read one at a time by a writer thread
#: (read_input_file())
_INPUTS = """
SELECT job_id, filename,
       CASE WHEN small AND sum(CASE WHEN small THEN size ELSE 0 END)
                           OVER (ORDER BY job_id, filename) <= %(budget)s
            THEN content_b64 END
FROM (SELECT i.job_id::text AS job_id, i.filename, i.content_b64,
             octet_length(i.content_b64) AS size,
             octet_length(i.content_b64) <= %(small)s AS small
      FROM public.job_input_files i
      WHERE i.job_id = ANY(%(ids)s::uuid[])
        AND NOT EXISTS (SELECT FROM comsa_migrate.stored_files s  -- exported from there
                        WHERE s.job_id = i.job_id AND s.on_disk AND s.path LIKE 'uploads/%%'
                          AND regexp_replace(s.path, '^.*/', '') = i.filename)
     ) AS i
ORDER BY job_id, filename
"""
_INPUT = "SELECT content_b64 FROM public.job_input_files WHERE job_id = %s AND filename = %s"


def export_batches(
    conn: psycopg.Connection[Any], selection: JobSelection, batch_size: int = DEFAULT_BATCH
) -> Iterator[ExportBatch]:
    """The chosen jobs, ``batch_size`` at a time, each batch in six queries."""
    has_inputs = table_exists(conn, "public.job_input_files")
    params: dict[str, Any] = {
        "ids": list(selection.ids) or None,
        "since": selection.since,
        "limit": batch_size,
        "after": FIRST_ID,
    }
    jobs_cursor = conn.cursor()
    set_json_loads(_loads, jobs_cursor)
    while True:
        rows = jobs_cursor.execute(_JOBS, params).fetchall()
        if not rows:
            return
        ids = [row[0] for row in rows]
        logs = _grouped(conn, _LOGS, ids)
        stored = {
            job_id: [StoredFile(job_id, *rest) for rest in found]
            for job_id, found in _grouped(conn, EXPORTED_FILES_OF, ids).items()
        }
        outputs = {
            job_id: [path for (path,) in found]
            for job_id, found in _grouped(conn, _OUTPUTS, ids).items()
        }
        inputs = _inputs(conn, ids) if has_inputs else {}
        jobs = [_job_row(row, logs.get(row[0], [])) for row in rows]
        migrated = frozenset(job_id for (job_id,) in conn.execute(_MIGRATED, [ids]))
        yield ExportBatch(jobs, stored, inputs, outputs, migrated)
        if len(rows) < batch_size:
            return
        params["after"] = ids[-1]


def count_jobs(conn: psycopg.Connection[Any], selection: JobSelection) -> int:
    """How many jobs the selection holds (for the progress bar)."""
    params = {"ids": list(selection.ids) or None, "since": selection.since}
    row = conn.execute(_COUNT, params).fetchone()
    return int(row[0]) if row else 0


#: contents read with their batch (the `db` store's, one chunk each, and the base64 of
#: job_input_files), each kind in one query: below this size each, and this much a batch
#: (the rest is read by the writer threads, one file at a time)
SMALL_CONTENT = 256 << 10
BATCH_CONTENT_BUDGET = 32 << 20


def small_contents(conn: psycopg.Connection[Any], files: Sequence[StoredFile]) -> dict[str, bytes]:
    """The contents of the `db` store's small files among ``files``, by sha256, read in one
    query (a content of one chunk); what is missing there is left to the store's read()."""
    wanted: dict[str, None] = {}  # in order, each once (a list's `in` made it quadratic)
    budget = BATCH_CONTENT_BUDGET
    for item in files:
        if item.size <= SMALL_CONTENT and item.size <= budget and item.sha256 not in wanted:
            wanted[item.sha256] = None
            budget -= item.size
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT k.sha256, k.data FROM comsa_migrate.file_chunks k"
        " JOIN comsa_migrate.file_contents c USING (sha256)"
        " WHERE k.sha256 = ANY(%s) AND k.seq = 0 AND octet_length(k.data) = c.size",
        [list(wanted)],
        binary=True,  # bytea as it is: not hex-encoded by the server, decoded here
    ).fetchall()
    return {sha: bytes(data) for sha, data in rows}


#: each digit as "0", every other byte as "x": a run of 19 zeros is a number orjson might
#: round (an integer beyond 64 bits), looked for without a regular expression
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x78 for byte in range(256))
_LONG_DIGITS = b"0" * 19


def _loads(data: str | bytes) -> Any:
    """A jsonb value (error, result) as json.loads() reads it, read by orjson (several times
    faster) unless it has a number that orjson would round or refuse."""
    if isinstance(data, bytes) and _LONG_DIGITS not in data.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # a number beyond a double (json.loads: inf), or nesting beyond orjson's
    return json.loads(data)


def _job_row(row: tuple[Any, ...], logs: list[tuple[Any, ...]]) -> JobRow:
    entries = tuple(LogEntry(moment, message) for moment, message in logs)
    (job_id, job_type, status, algorithm, age_group, country, calib, ensemble) = row[:8]
    created_at, started_at, completed_at, error, result, input_file_path = row[8:14]
    return JobRow(
        job_id,
        job_type,
        status,
        algorithm,
        age_group,
        country,
        calib,
        ensemble,
        created_at,
        started_at,
        completed_at,
        error,
        result,
        input_file_path,
        entries,
    )


def _inputs(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, list[tuple[str, Any]]]:
    params = {"ids": ids, "small": SMALL_CONTENT, "budget": BATCH_CONTENT_BUDGET}
    found: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for job_id, filename, content_b64 in conn.execute(_INPUTS, params).fetchall():
        found[job_id].append((filename, content_b64))
    return found


def read_input_file(
    connection: Callable[[], psycopg.Connection[Any]], job_id: str, filename: str
) -> str:
    """The base64 job_input_files holds for an upload that did not come with its batch, read
    on ``connection()``; NotWritten if it cannot be read (gone since, or refused), RunFault
    if the database went away (or no connection can be had)."""
    path = f"uploads/{job_id}/{filename}"
    try:
        row = connection().execute(_INPUT, [job_id, filename]).fetchone()
    except (DatabaseUnavailable, psycopg.Error) as exc:
        if _lost(exc):
            raise RunFault(f"the database went away: {first_line(exc)}") from None
        message = f"job_input_files could not be read: {first_line(exc)}; not written"
        raise NotWritten("input_unreadable", message, job_id, path) from None
    if row is None or row[0] is None:
        message = "its job_input_files row was deleted while the export ran; not written"
        raise NotWritten("input_unreadable", message, job_id, path)
    return str(row[0])


def _grouped(
    conn: psycopg.Connection[Any], query: str, ids: list[str]
) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for job_id, *rest in conn.execute(query, [ids]).fetchall():
        found[job_id].append(tuple(rest))
    return found


def guarded_read(
    read: Callable[[], Iterable[bytes]], job_id: str | None = None, path: str | None = None
) -> Iterator[bytes]:
    """The chunks ``read()`` gives, its failures sorted out: the store refusing this one read
    is the file's fault (NotWritten, ``store_read_failed``); a database gone away (a lost
    connection) is the run's (RunFault). KeyError (not held) passes as it is."""
    try:
        yield from read()
    except (DatabaseUnavailable, psycopg.Error) as exc:
        if not _lost(exc):
            message = f"the file store could not read its content: {first_line(exc)}; not written"
            raise NotWritten("store_read_failed", message, job_id, path) from None
        raise RunFault(f"the database went away: {first_line(exc)}") from None
    except FileStoreError as exc:
        message = f"the file store could not read its content: {first_line(exc)}; not written"
        raise NotWritten("store_read_failed", message, job_id, path) from None


def stop_reason(exc: BaseException) -> str:
    """The line a run stopped by ``exc`` (a RunFault, or the rows' connection lost) ends with."""
    return str(exc) if isinstance(exc, RunFault) else f"the database went away: {first_line(exc)}"


def _lost(exc: BaseException) -> bool:
    """A connection that cannot be had, or was lost (no SQLSTATE: the client saw it go;
    class 08; the server shutting down), as opposed to a statement refused or cancelled."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith(("08", "57P"))
    )
