"""`gc`: delete the contents of the file store that no stored file names.

Nothing else ever deletes a content: a file removed from disk keeps its row, and so its
last content; a file changed leaves its old content unnamed, which only gc removes.

What a store holds is its registry (comsa_migrate.file_contents, for every store). Each
content goes in a transaction of its own: its registry row is locked FOR UPDATE, which
waits for any job's transaction naming it (record_stored_files() holds a share lock on
the rows of the contents it names until it commits); then one conditional DELETE, a
statement of its own so that under READ COMMITTED it sees every stored_files row
committed before the lock was granted, deletes the row only when it is older than
``min_age`` and no stored file names it; then the content's bytes (its chunks, or its
object) go, before that transaction commits. A writer that found the content there
meanwhile either made gc spare it (its put refreshed stored_at, or its job committed a
row naming it), or finds the row gone when its job's transaction locks it: that job
fails and is written again by the next run, which puts the content again. No stored
file ever names a content that is gone.

``min_age`` spares what a run has just put or found, before the job that names it
commits: such a job then does not fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from comsa_migrate.errors import FileStoreError
from comsa_migrate.file_store.keeping import check_file_store, store_on

__all__ = ["DEFAULT_MIN_AGE", "Garbage", "collect_garbage"]

DEFAULT_MIN_AGE = timedelta(hours=1)

_HELD = (
    "SELECT count(*), coalesce(sum(size), 0)::bigint FROM comsa_migrate.file_contents"
    " WHERE store = %(store)s"
)
_UNNAMED = """
SELECT c.sha256, c.size FROM comsa_migrate.file_contents c
WHERE c.store = %(store)s AND c.stored_at < clock_timestamp() - %(min_age)s
  AND NOT EXISTS (SELECT FROM comsa_migrate.stored_files f WHERE f.sha256 = c.sha256)
ORDER BY c.sha256
"""
_LOCK = (
    "SELECT 1 FROM comsa_migrate.file_contents"
    " WHERE sha256 = %(sha256)s AND store = %(store)s FOR UPDATE"
)
_DELETE = """
DELETE FROM comsa_migrate.file_contents c
WHERE c.sha256 = %(sha256)s AND c.store = %(store)s
  AND c.stored_at < clock_timestamp() - %(min_age)s
  AND NOT EXISTS (SELECT FROM comsa_migrate.stored_files f WHERE f.sha256 = c.sha256)
RETURNING c.size
"""


@dataclass(frozen=True, slots=True)
class Garbage:
    """What gc found, and did."""

    url: str
    contents: int  # contents the store holds...
    bytes: int  # ...and their size
    unnamed: int  # contents no stored file names, older than min_age (deleted, with --yes)...
    unnamed_bytes: int  # ...and their size
    deleted: bool  # whether they were deleted (--yes), or only counted


def collect_garbage(
    conn: psycopg.Connection[Any],
    url: str,
    *,
    delete: bool,
    min_age: timedelta = DEFAULT_MIN_AGE,
) -> Garbage:
    """Count (and with ``delete``, delete) the contents of ``url`` that no row of
    comsa_migrate.stored_files on ``conn`` (autocommit) names and that are older than
    ``min_age``. Raises FileStoreError when an object store fails to delete one (its
    registry row is gone all the same: an object left behind is written again whole by
    the next put of its content)."""
    check_file_store(url)  # an unknown bucket holds nothing to count: exit 2, not 0
    store = store_on(url, conn)
    args: dict[str, Any] = {"store": url, "min_age": min_age}
    held = conn.execute(_HELD, args).fetchone() or (0, 0)
    unnamed = dict(conn.execute(_UNNAMED, args).fetchall())
    if delete:
        gone: dict[str, int] = {}
        for sha in unnamed:
            failure: FileStoreError | None = None
            with conn.transaction():
                conn.execute(_LOCK, {**args, "sha256": sha})
                row = conn.execute(_DELETE, {**args, "sha256": sha}).fetchone()
                if row is None:
                    continue  # named, or put again, meanwhile
                gone[sha] = int(row[0])
                try:
                    store.drop(sha)
                except FileStoreError as exc:
                    failure = exc
            if failure is not None:
                raise failure
        unnamed = gone
    return Garbage(
        url,
        int(held[0]),
        int(held[1]),
        len(unnamed),
        sum(unnamed.values()),
        deleted=delete,
    )
