"""The `db` file store: contents in the target database, as 1 MiB chunks of bytea."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import psycopg

__all__ = ["DatabaseStore"]

#: two writers storing the same content wait for each other, and the second finds it there
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('comsa_migrate.file:' || %s, 0))"
_HAS = "SELECT 1 FROM comsa_migrate.file_contents WHERE sha256 = %s"


class DatabaseStore:
    """Contents in comsa_migrate.file_contents and file_chunks, on a connection of its own."""

    url = "db"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def has(self, sha256: str) -> bool:
        return self.conn.execute(_HAS, (sha256,)).fetchone() is not None

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        with self.conn.transaction():
            self.conn.execute(_LOCK, (sha256,))
            if self.has(sha256):
                return
            with self.conn.cursor().copy(
                "COPY comsa_migrate.file_chunks (sha256, seq, data) FROM STDIN"
            ) as copy:
                for seq, chunk in enumerate(chunks):
                    copy.write_row((sha256, seq, chunk))
            self.conn.execute(
                "INSERT INTO comsa_migrate.file_contents (sha256, size) VALUES (%s, %s)",
                (sha256, size),
            )

    def read(self, sha256: str) -> Iterator[bytes]:
        if not self.has(sha256):
            raise KeyError(sha256)
        with self.conn.cursor() as cur:
            for (data,) in cur.stream(
                "SELECT data FROM comsa_migrate.file_chunks WHERE sha256 = %s ORDER BY seq",
                (sha256,),
            ):
                yield bytes(data)

    def delete(self, sha256: str) -> None:
        with self.conn.transaction():
            for table in ("file_contents", "file_chunks"):
                self.conn.execute(
                    f"DELETE FROM comsa_migrate.{table} WHERE sha256 = %s",  # noqa: S608 - fixed names
                    (sha256,),
                )

    def contents(self) -> Iterator[tuple[str, int]]:
        with self.conn.cursor() as cur:
            yield from cur.stream(
                "SELECT sha256, size FROM comsa_migrate.file_contents ORDER BY sha256"
            )

    def stored_before(self, cutoff: datetime) -> Iterator[tuple[str, int]]:
        """The contents stored before ``cutoff`` (for gc, which spares younger ones)."""
        with self.conn.cursor() as cur:
            yield from cur.stream(
                "SELECT sha256, size FROM comsa_migrate.file_contents WHERE stored_at < %s"
                " ORDER BY sha256",
                (cutoff,),
            )

    def close(self) -> None:
        self.conn.close()
