"""Keeping a batch's files: each content put in the file store before the batch is written.

Called once per batch, where it is about to be written (pipeline/scheduler.applying), on the
writer's own connection. For each job of the batch (its JSON, its uploads, its outputs)
a file is read only when its stat differs from its stored_files row, or its content is
missing from the store (the registry's word, asked for the whole batch in one query); it
is hashed while read, CHUNK_SIZE at a time, and never held whole. What is found becomes
the job's record (record_stored_files(), in the job's own transaction, after its contents
are in the store; that function fails the job when gc deleted one meanwhile): so no row
ever names content that is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg

from comsa_migrate.core.layout import FILE_FLAGS, JobSource
from comsa_migrate.db.faults import DEFAULT_LIMITS, Limits, describe_fault, set_limits
from comsa_migrate.db.stored_files import STORED_FILES_OF
from comsa_migrate.db.writes import BatchStopped
from comsa_migrate.errors import FileStoreError
from comsa_migrate.file_store import CHUNK_SIZE, FileStore, open_file_store
from comsa_migrate.file_store.database import DatabaseStore
from comsa_migrate.file_store.registered import RegisteredObjects

__all__ = ["ContentsNotStored", "check_file_store", "keep_contents", "store_on"]

log = logging.getLogger(__name__)


class ContentsNotStored(BatchStopped):
    """The file store failed while a batch's contents were put: nothing of the batch was
    written, and the run stops as on a fault of the database (a daemon waits it out).
    ``database``: the failure was the database's (the `db` store, or the registry of an
    object store's contents), not the object store's."""

    def __init__(self, jobs: int, message: str, *, database: bool = False) -> None:
        super().__init__([None] * jobs, None, message, counted=True, limits=Limits())
        self.cause = message
        self.database = database
        self.args = (message,)


_opened: dict[tuple[str, ...], FileStore] = {}
_opened_lock = threading.Lock()


def store_on(
    url: str, conn: psycopg.Connection[Any], limits: Limits = DEFAULT_LIMITS
) -> DatabaseStore | RegisteredObjects:
    """The store ``url`` names, for a writer on ``conn`` (its puts with ``limits``): the
    `db` store on that very connection (closed with it); an object store shared by every
    writer of the process, its contents registered on ``conn``."""
    if url == "db":
        return DatabaseStore(conn, limits)
    return RegisteredObjects(_object_store(url), conn, limits)


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
    conn: psycopg.Connection[Any],
    url: str,
    data_dir: Path,
    limits: Limits,
    sources: Sequence[JobSource],
) -> list[bytes | None]:
    """Put the contents of these jobs' files (under ``data_dir``) in the store ``url``
    names; each job's record, in order.

    Raises ContentsNotStored when the store fails, the database's part of it included
    (nothing of the batch is written then).
    """
    opened = store_on(url, conn, limits)
    store: _Puts = _Grouped(opened) if isinstance(opened, DatabaseStore) else opened
    try:
        known = _stored_rows(conn, [source.job_id for source in sources], limits)
        held = opened.held(sorted({row.sha256 for row in known.values()}))
        records: list[bytes | None] = [
            _keep_job(store, data_dir, source, known, held) for source in sources
        ]
        if isinstance(store, _Grouped):
            store.flush()
        return records
    except FileStoreError as exc:
        raise ContentsNotStored(len(sources), str(exc)) from None
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = describe_fault(exc.sqlstate, first, limits)
        message = f"file store {url}: {cause}"
        raise ContentsNotStored(len(sources), message, database=True) from None


def _stored_rows(
    conn: psycopg.Connection[Any], job_ids: list[str], limits: Limits
) -> dict[tuple[str, str], _Row]:
    with conn.transaction():
        set_limits(conn, limits)
        rows = conn.execute(STORED_FILES_OF, [job_ids]).fetchall()
    return {(job_id, path): _Row(sha, size, mtime) for job_id, path, sha, size, mtime, _ in rows}


def _keep_job(
    store: _Puts,
    data_dir: Path,
    source: JobSource,
    known: dict[tuple[str, str], _Row],
    held: set[str],
) -> bytes:
    read: list[tuple[str, str, int, int]] = []
    present: list[str] = []
    for path in (source.json_path, *(f.file_path for f in source.files)):
        stored = known.get((source.job_id, path))
        kept = stored is not None and stored.sha256 in held
        on_disk, row = _keep_file(store, data_dir, path, stored if kept else None)
        if on_disk:
            present.append(path)
        if row is not None:
            read.append((path, row.sha256, row.size, row.mtime_ns))
    record = {"id": source.job_id, "store": store.url, "files": read, "present": present}
    return orjson.dumps(record)


def _keep_file(
    store: _Puts, data_dir: Path, path: str, stored: _Row | None
) -> tuple[bool, _Row | None]:
    """(whether the file is on disk, its new row when it was read and stored now);
    ``stored`` is its row when the store holds the content that row names."""
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
        if stored is not None and (stored.size, stored.mtime_ns) == (row.size, row.mtime_ns):
            return True, None  # unchanged since it was stored: nothing read, nothing sent
        digest, size, whole = _hash(fd)
        if size != row.size or _changed(before, os.fstat(fd)):
            log.info("%s: changed while it was read; left for the next run", path)
            return True, None
        # a put of a content there already reads nothing: it refreshes its registry row
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


class _Puts(Protocol):
    """What keeping needs of a store."""

    url: str

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None: ...


class _Grouped:
    """The `db` store, its small contents put together: up to _GROUP_BYTES at a time, in
    one transaction and one round trip (DatabaseStore.put_many); the others one by one.
    The caller flushes before the rows that name them are sent."""

    def __init__(self, store: DatabaseStore) -> None:
        self.store = store
        self.url = store.url
        self.pending: dict[str, tuple[int, bytes]] = {}
        self.size = 0

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        if size > CHUNK_SIZE:
            self.store.put(sha256, size, chunks)
            return
        data = b"".join(chunks)
        self.pending[sha256] = (size, data)
        self.size += len(data)
        if self.size >= _GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.put_many([(sha, size, data) for sha, (size, data) in self.pending.items()])
        self.pending, self.size = {}, 0


#: small contents held for one round trip: memory stays within this and one more chunk
_GROUP_BYTES = 8 << 20


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
