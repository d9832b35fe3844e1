"""Keeping a batch's files: each content put in the file store before the batch is written.

Called once per batch, where it is about to be written (core/pipeline.apply), on the
writer's own connection. For each job of the batch (its JSON, its uploads, its outputs)
a file is read only when its stat differs from its stored_files row, or its content is
missing from the store; it is hashed while read, CHUNK_SIZE at a time, and never held
whole. What is found becomes the job's record (record_stored_files(), in the job's own
transaction, after its contents are in the store): so no row ever names content that
is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from comsa_migrate.core.layout import FILE_FLAGS, JobSource
from comsa_migrate.core.store import BatchStopped
from comsa_migrate.db.faults import Limits, set_limits
from comsa_migrate.errors import FileStoreError
from comsa_migrate.file_store import CHUNK_SIZE, FileStore, open_file_store
from comsa_migrate.file_store.database import DatabaseStore

if TYPE_CHECKING:
    from comsa_migrate.core.backfill import BackfillOptions

__all__ = ["ContentsNotStored", "check_file_store", "keep_contents", "store_on"]

log = logging.getLogger(__name__)

_STORED = (
    "SELECT job_id::text, path, sha256, size, mtime_ns FROM comsa_migrate.stored_files"
    " WHERE job_id = ANY(%s::uuid[])"
)


class ContentsNotStored(BatchStopped):
    """The file store failed while a batch's contents were put: nothing of the batch was
    written, and the run stops as on a fault of the database (a daemon waits it out)."""

    def __init__(self, jobs: int, message: str) -> None:
        super().__init__([None] * jobs, None, message, counted=True, limits=Limits())
        self.cause = message
        self.args = (message,)


_opened: dict[tuple[str, ...], FileStore] = {}
_opened_lock = threading.Lock()


def store_on(url: str, conn: psycopg.Connection[Any]) -> FileStore:
    """The store ``url`` names, for a writer on ``conn``: the `db` store on that very
    connection (closed with it), an object store shared by every writer of the process."""
    return DatabaseStore(conn) if url == "db" else _object_store(url)


def _object_store(url: str) -> FileStore:
    """One object store per URL and environment, for every writer of the process."""
    key = (url, *(os.environ.get(name, "") for name in _ENVIRONMENT))
    with _opened_lock:
        if key not in _opened:
            _opened[key] = open_file_store(url, _no_connection)
        return _opened[key]


def _no_connection() -> psycopg.Connection[Any]:
    raise AssertionError("only the `db` store connects to the database")


_ENVIRONMENT = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def check_file_store(url: str) -> None:
    """Raise ConfigurationError or FileStoreError (exit 2) unless ``url`` names a store
    this run can use: the `db` store needs nothing more than the database; an object
    store must answer, its bucket exist and the credentials be good."""
    if url == "db":
        return
    check = getattr(_object_store(url), "check", None)
    if check is not None:
        check()


@dataclass(frozen=True, slots=True)
class _Row:
    sha256: str
    size: int
    mtime_ns: int


def keep_contents(
    conn: psycopg.Connection[Any], options: BackfillOptions, sources: Sequence[JobSource]
) -> list[bytes | None]:
    """Put the contents of these jobs' files in the store; each job's record, in order.

    Raises ContentsNotStored when the store fails (nothing of the batch is written then).
    """
    assert options.file_store is not None
    store = store_on(options.file_store, conn)
    known = _stored_rows(conn, [source.job_id for source in sources], options.limits)
    try:
        return [_keep_job(store, options.data_dir, source, known) for source in sources]
    except FileStoreError as exc:
        raise ContentsNotStored(len(sources), str(exc)) from None


def _stored_rows(
    conn: psycopg.Connection[Any], job_ids: list[str], limits: Limits
) -> dict[tuple[str, str], _Row]:
    with conn.transaction():
        set_limits(conn, limits)
        rows = conn.execute(_STORED, [job_ids]).fetchall()
    return {(job_id, path): _Row(sha, size, mtime) for job_id, path, sha, size, mtime in rows}


def _keep_job(
    store: FileStore, data_dir: Path, source: JobSource, known: dict[tuple[str, str], _Row]
) -> bytes:
    read: list[tuple[str, str, int, int]] = []
    present: list[str] = []
    for path in (source.json_path, *(f.file_path for f in source.files)):
        on_disk, row = _keep_file(store, data_dir, path, known.get((source.job_id, path)))
        if on_disk:
            present.append(path)
        if row is not None:
            read.append((path, row.sha256, row.size, row.mtime_ns))
    return orjson.dumps({"id": source.job_id, "files": read, "present": present})


def _keep_file(
    store: FileStore, data_dir: Path, path: str, stored: _Row | None
) -> tuple[bool, _Row | None]:
    """(whether the file is on disk, its new row when it was read and stored now)."""
    try:
        fd = os.open(data_dir / path, FILE_FLAGS)
    except FileNotFoundError:
        return False, None  # removed since the scan: its row keeps its last content
    except OSError as exc:
        log.warning("%s: cannot read the file to keep it (%s); the next change retries", path, exc)
        return True, None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return True, None
        row = _Row("", before.st_size, before.st_mtime_ns)
        if (
            stored is not None
            and (stored.size, stored.mtime_ns) == (row.size, row.mtime_ns)
            and store.has(stored.sha256)
        ):
            return True, None  # unchanged since it was stored: nothing read, nothing sent
        digest, size, whole = _hash(fd)
        if size != row.size or _changed(before, os.fstat(fd)):
            log.info("%s: changed while it was read; left for the next run", path)
            return True, None
        if not store.has(digest):
            reading = _Reread(fd, digest)
            try:
                store.put(digest, size, [whole] if whole is not None else reading.chunks())
            except Exception:
                if not reading.changed:
                    raise
                log.info("%s: changed while it was stored; left for the next run", path)
                return True, None
        return True, _Row(digest, row.size, row.mtime_ns)
    except OSError as exc:
        log.warning("%s: cannot read the file to keep it (%s); the next change retries", path, exc)
        return True, None
    finally:
        os.close(fd)


def _hash(fd: int) -> tuple[str, int, bytes | None]:
    """(sha256, size, the bytes when they are one chunk) of the open file, read in chunks."""
    digest = hashlib.sha256()
    size, parts = 0, list[bytes]()
    while chunk := os.pread(fd, CHUNK_SIZE, size):
        digest.update(chunk)
        size += len(chunk)
        parts = [*parts, chunk] if size <= CHUNK_SIZE else []
    return digest.hexdigest(), size, b"".join(parts) if size <= CHUNK_SIZE else None


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    keys = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")
    return any(getattr(before, key) != getattr(after, key) for key in keys)


class _Reread:
    """A large file read a second time, to be stored: its chunks, hashed again on the way.

    The last chunk is held back until the digest is known: when the bytes are not those
    hashed before, the store gets an error instead of it, so it never holds the wrong
    content under a digest.
    """

    def __init__(self, fd: int, digest: str) -> None:
        self.fd, self.digest = fd, digest
        self.changed = False

    def chunks(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        held: bytes | None = None
        offset = 0
        try:
            while chunk := os.pread(self.fd, CHUNK_SIZE, offset):
                offset += len(chunk)
                digest.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        except OSError:
            self.changed = True
            raise
        if digest.hexdigest() != self.digest:
            self.changed = True
            raise OSError("the file changed while it was stored")
        if held is not None:
            yield held
