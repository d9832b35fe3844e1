"""`gc`: delete the contents of the file store that no stored file names.

Nothing else ever deletes a content: a file removed from disk keeps its row, and so its
last content; a file changed leaves its old content unnamed, which only gc removes.
Contents younger than ``min_age`` are spared: a writer puts a content before the
transaction that names it commits. One that a writer names again while gc deletes it
(it found the content there a moment before) loses its rows, and its job is read again
by the next run, which stores it again: no row is left naming a content that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from comsa_migrate.file_store.keeping import store_on

__all__ = ["DEFAULT_MIN_AGE", "Garbage", "collect_garbage"]

DEFAULT_MIN_AGE = timedelta(hours=1)

_NAMED = "SELECT DISTINCT sha256 FROM comsa_migrate.stored_files"
_RENAMED = """
WITH gone AS (
    DELETE FROM comsa_migrate.stored_files WHERE sha256 = ANY(%s) RETURNING job_id
)
UPDATE comsa_migrate.job_state s SET fingerprint = 'read again: gc deleted a content'
FROM (SELECT DISTINCT job_id FROM gone) AS g WHERE s.job_id = g.job_id
"""


@dataclass(frozen=True, slots=True)
class Garbage:
    """What gc found, and did."""

    url: str
    contents: int  # contents the store holds...
    bytes: int  # ...and their size
    unnamed: int  # contents no stored file names, older than min_age...
    unnamed_bytes: int  # ...and their size
    deleted: bool  # whether they were deleted (--yes), or only counted
    renamed: int = 0  # jobs whose files named a content as it was deleted: read again


def collect_garbage(
    conn: psycopg.Connection[Any],
    url: str,
    *,
    delete: bool,
    min_age: timedelta = DEFAULT_MIN_AGE,
) -> Garbage:
    """Count (and with ``delete``, delete) the contents of ``url`` that no row of
    comsa_migrate.stored_files on ``conn`` names and that are older than ``min_age``."""
    store = store_on(url, conn)
    held = dict(store.contents())
    cutoff = datetime.now(UTC) - min_age
    old = dict(store.stored_before(cutoff))  # type: ignore[attr-defined]
    named = {sha for (sha,) in conn.execute(_NAMED).fetchall()}
    unnamed = {sha: size for sha, size in old.items() if sha not in named and sha in held}
    renamed = 0
    if delete and unnamed:
        for sha in sorted(unnamed):
            store.delete(sha)
        with conn.transaction():
            renamed = conn.execute(_RENAMED, [sorted(unnamed)]).rowcount
    return Garbage(
        url,
        len(held),
        sum(held.values()),
        len(unnamed),
        sum(unnamed.values()),
        deleted=delete,
        renamed=renamed,
    )
