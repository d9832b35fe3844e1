"""An object store as a writer, gc and the report use it: its contents counted by the
registry (comsa_migrate.file_contents) on a database connection, not by listing the bucket.

A put records (sha256, size, store URL) in the registry after the object is put whole; a
content whose registry row exists is not put again (its row is refreshed instead), and
has() is the registry's word. An object with no registry row (its put succeeded, its
record did not) is left alone: the next put of the same content writes it again whole and
records it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from comsa_migrate.db.faults import Limits, set_limits
from comsa_migrate.file_store import FileStore
from comsa_migrate.file_store.database import HELD

__all__ = ["RegisteredObjects"]

_CLAIM = (
    "UPDATE comsa_migrate.file_contents SET stored_at = now()"
    " WHERE sha256 = %s AND store = %s RETURNING 1"
)
_REGISTER = (
    "INSERT INTO comsa_migrate.file_contents (sha256, size, store) VALUES (%s, %s, %s)"
    " ON CONFLICT (sha256) DO UPDATE"
    " SET stored_at = now(), store = EXCLUDED.store, size = EXCLUDED.size"
)
_CONTENTS = "SELECT sha256, size FROM comsa_migrate.file_contents WHERE store = %s ORDER BY sha256"


class RegisteredObjects:
    """``objects`` (shared by the writers of a process), registered on ``conn``."""

    def __init__(self, objects: FileStore, conn: psycopg.Connection[Any], limits: Limits) -> None:
        self.objects, self.conn, self.limits = objects, conn, limits
        self.url = objects.url

    def has(self, sha256: str) -> bool:
        return bool(self.held([sha256]))

    def held(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these contents the registry says the store holds, in one query."""
        if not sha256s:
            return set()
        rows = self.conn.execute(HELD, (self.url, list(sha256s))).fetchall()
        return {sha for (sha,) in rows}

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """Put the object unless the registry has it (then its row is refreshed, so gc's
        --min-age spares it until the job that names it commits), and record it."""
        with self.conn.transaction():
            set_limits(self.conn, self.limits)
            if self.conn.execute(_CLAIM, (sha256, self.url)).fetchone() is not None:
                return
        self.objects.put(sha256, size, chunks)
        with self.conn.transaction():
            set_limits(self.conn, self.limits)
            self.conn.execute(_REGISTER, (sha256, size, self.url))

    def read(self, sha256: str) -> Iterator[bytes]:
        return self.objects.read(sha256)

    def drop(self, sha256: str) -> None:
        """Delete the object, in gc's transaction that deleted its registry row."""
        self.objects.delete(sha256)

    def delete(self, sha256: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s AND store = %s",
                (sha256, self.url),
            )
            self.drop(sha256)

    def contents(self) -> Iterator[tuple[str, int]]:
        with self.conn.cursor() as cur:
            yield from cur.stream(_CONTENTS, (self.url,))

    def close(self) -> None:
        pass  # the object store is the process's; the connection is the caller's
