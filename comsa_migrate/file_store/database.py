"""The `db` file store: contents in the target database, as 1 MiB chunks of bytea."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

from comsa_migrate.file_store import CHUNK_SIZE

__all__ = ["DatabaseStore"]

#: two writers storing the same content wait for each other, and the second finds it there
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('comsa_migrate.file:' || %s, 0))"
_HAS = "SELECT 1 FROM comsa_migrate.file_contents WHERE sha256 = %s"
#: a put does not wait for its WAL flush: WAL is flushed in order, and the transaction that
#: names the content commits after it, so whenever that one survives a crash, so does the
#: put (the job writes' own transactions do the same: db/job_writes.py)
_NO_FLUSH_WAIT = "SELECT set_config('synchronous_commit', 'off', true)"


class DatabaseStore:
    """Contents in comsa_migrate.file_contents and file_chunks, on a connection of its own."""

    url = "db"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def has(self, sha256: str) -> bool:
        return self.conn.execute(_HAS, (sha256,)).fetchone() is not None

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        if size <= CHUNK_SIZE and psycopg.Pipeline.is_supported():
            self._put_one(sha256, size, b"".join(chunks))
            return
        with self.conn.transaction():
            self.conn.execute(_NO_FLUSH_WAIT)
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

    def _put_one(self, sha256: str, size: int, data: bytes) -> None:
        """A content of one chunk, in one round trip: its two rows inserted unless there
        (a second writer of the same bytes waits on the first one's rows, then finds them)."""
        with self.conn.pipeline(), self.conn.transaction():
            self.conn.execute(_NO_FLUSH_WAIT)
            self.conn.execute(
                "INSERT INTO comsa_migrate.file_chunks (sha256, seq, data) VALUES (%s, 0, %s)"
                " ON CONFLICT DO NOTHING",
                (sha256, data),
            )
            self.conn.execute(
                "INSERT INTO comsa_migrate.file_contents (sha256, size) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (sha256, size),
            )

    def put_many(self, contents: Sequence[tuple[str, int, bytes]]) -> None:
        """Contents of one chunk each, (sha256, size, bytes), in one transaction and one
        round trip; those there already are skipped. In sha256 order, so that two writers
        storing some of the same contents wait for each other rather than deadlock."""
        ordered = sorted(contents)
        with self.conn.pipeline(), self.conn.transaction():
            self.conn.execute(_NO_FLUSH_WAIT)
            self.conn.execute(
                "INSERT INTO comsa_migrate.file_chunks (sha256, seq, data)"
                " SELECT u.sha256, 0, u.data FROM unnest(%s::text[], %s::bytea[])"
                " WITH ORDINALITY AS u(sha256, data, n) ORDER BY u.n ON CONFLICT DO NOTHING",
                ([c[0] for c in ordered], [c[2] for c in ordered]),
            )
            self.conn.execute(
                "INSERT INTO comsa_migrate.file_contents (sha256, size)"
                " SELECT u.sha256, u.size FROM unnest(%s::text[], %s::bigint[])"
                " WITH ORDINALITY AS u(sha256, size, n) ORDER BY u.n ON CONFLICT DO NOTHING",
                ([c[0] for c in ordered], [c[1] for c in ordered]),
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
