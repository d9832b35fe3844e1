"""The file store's records of a job's files (comsa_migrate.stored_files), as restore and
export read them: which content each file had, one JSON a job, and which store holds
the contents."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import psycopg

from comsa_migrate.db.writes import table_exists
from comsa_migrate.errors import ConfigurationError, SchemaError

__all__ = [
    "EXPORTED_FILES_OF",
    "FIRST_ID",
    "STORED_FILES_OF",
    "StoredFile",
    "count_stored_files",
    "require_contents_in",
    "require_file_store",
    "stored_files",
]

#: below every job id: where keyset pages start
FIRST_ID = "00000000-0000-0000-0000-000000000000"


class StoredFile(NamedTuple):
    """A row of comsa_migrate.stored_files: which content a job's file had."""

    job_id: str
    path: str  # relative to DATA_DIR
    sha256: str
    size: int
    mtime_ns: int
    on_disk: bool = True  # false: removed from disk since, its last content kept


def require_file_store(conn: psycopg.Connection[Any]) -> None:
    """SchemaError unless the database has the file store's table (migration 008)."""
    if not table_exists(conn, "comsa_migrate.stored_files"):
        raise SchemaError(
            "this database has no file store (comsa_migrate.stored_files): a backfill or "
            "sync with --file-store makes it and stores the files"
        )


#: one stored JSON a job, the one to write back (the others are left out): the one on disk
#: at the last sync (a JSON the legacy backend rewrote under another case of its name
#: leaves the old name's row, no longer on disk), then the one named as the legacy backend
#: names it, then the first by path; two would be a duplicate_job_id to the next backfill
_ONE_JSON_A_JOB = """
NOT (s.path LIKE 'jobs/%%' AND EXISTS (
    SELECT FROM comsa_migrate.stored_files o
    WHERE o.job_id = s.job_id AND o.path LIKE 'jobs/%%'
      AND (NOT o.on_disk, o.path <> 'jobs/' || o.job_id::text || '.json', o.path)
        < (NOT s.on_disk, s.path <> 'jobs/' || s.job_id::text || '.json', s.path)))"""
#: a row as StoredFile holds it
_SELECT = (
    "SELECT job_id::text, path, sha256, size, mtime_ns, on_disk FROM comsa_migrate.stored_files s"
)
_STORED = (
    _SELECT
    + " WHERE (%(ids)s::uuid[] IS NULL OR job_id = ANY(%(ids)s::uuid[])) AND"
    + _ONE_JSON_A_JOB
)


#: the stores the registry says hold the contents these jobs' stored files name
_HOLDERS = (
    "SELECT c.store, count(*) FROM comsa_migrate.file_contents c"
    " WHERE c.sha256 IN (SELECT f.sha256 FROM comsa_migrate.stored_files f"
    " WHERE %(ids)s::uuid[] IS NULL OR f.job_id = ANY(%(ids)s::uuid[]))"
    " GROUP BY c.store ORDER BY count(*) DESC, c.store"
)


def require_contents_in(conn: psycopg.Connection[Any], url: str, ids: Sequence[str]) -> None:
    """Raises ConfigurationError when the registry has every content these jobs' stored
    files name in other stores than ``url``: a run reading ``url`` would write none of
    them (each a stored_content_missing; with --missing-ok an empty tree and exit 0)."""
    holders = dict(conn.execute(_HOLDERS, {"ids": list(ids) or None}).fetchall())
    if holders and url not in holders:
        where = ", ".join(f"{store} ({n:,})" for store, n in holders.items())
        raise ConfigurationError(
            f"the file store {url} holds none of the contents of these files: the registry "
            f"has them in {where}; name that store with --file-store"
        )


def count_stored_files(conn: psycopg.Connection[Any], ids: Sequence[str]) -> int:
    row = conn.execute(f"SELECT count(*) FROM ({_STORED}) s", {"ids": list(ids) or None})  # noqa: S608
    found = row.fetchone()
    return int(found[0]) if found else 0


def stored_files(
    conn: psycopg.Connection[Any], ids: Sequence[str], batch_size: int = 1000
) -> Iterator[list[StoredFile]]:
    """Every stored file of the jobs ``ids`` (all with none), by job and path, a batch at a
    time (keyset pages: the connection is free between batches)."""
    params: dict[str, Any] = {"ids": list(ids) or None, "limit": batch_size}
    after: tuple[str, str] = (FIRST_ID, "")
    while True:
        params["job"], params["path"] = after
        rows = conn.execute(
            _STORED + " AND (job_id, path) > (%(job)s::uuid, %(path)s)"
            " ORDER BY job_id, path LIMIT %(limit)s",
            params,
        ).fetchall()
        if not rows:
            return
        yield [StoredFile(*row) for row in rows]
        if len(rows) < batch_size:
            return
        after = (rows[-1][0], rows[-1][1])


_FILES_OF = _SELECT + " WHERE job_id = ANY(%s::uuid[])"
#: the stored files of these jobs, by job and path, as the file store's keeping reads them
STORED_FILES_OF = _FILES_OF + " ORDER BY job_id, path"
#: the same, with one JSON a job, for the export
EXPORTED_FILES_OF = _FILES_OF + " AND" + _ONE_JSON_A_JOB + " ORDER BY job_id, path"
