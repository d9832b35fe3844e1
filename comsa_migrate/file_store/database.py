"""The `db` file store: contents in the target database, as 1 MiB chunks of bytea.

Every put is a transaction of its own with the tool's limits (db/faults.py), whatever the
role's defaults: a role's short statement_timeout does not cancel a large content's COPY
on every rerun. A content's registry row (file_contents, schema/008_file_store.sql) is
upserted in the same transaction as its chunks, so it exists only whole; a content found
there already has its row refreshed (stored_at) and locked for the rest of the put, so
gc's --min-age spares it until the job that names it commits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from comsa_migrate.db.faults import DEFAULT_LIMITS, Limits, set_limits
from comsa_migrate.file_store import CHUNK_SIZE

__all__ = ["HELD", "DatabaseStore"]

#: two writers storing the same large content wait for each other, and the second finds it
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('comsa_migrate.file:' || %s, 0))"
#: which of these contents the registry says the store (%s) holds
HELD = "SELECT sha256 FROM comsa_migrate.file_contents WHERE store = %s AND sha256 = ANY(%s)"
#: a content there already, refreshed and locked: True when it is
_CLAIM = (
    "UPDATE comsa_migrate.file_contents SET stored_at = now()"
    " WHERE sha256 = %s AND store = 'db' RETURNING 1"
)
#: a put does not wait for its WAL flush: WAL is flushed in order, and the transaction that
#: names the content commits after it, so whenever that one survives a crash, so does the
#: put (the job writes' own transactions do the same: db/job_writes.py)
_NO_FLUSH_WAIT = "SELECT set_config('synchronous_commit', 'off', true)"
#: the registry rows first, in sha256 order: a content there already is refreshed and
#: locked (a gc deleting it meanwhile is waited for, and the content is then stored anew);
#: a row of another store (the content was kept elsewhere before) becomes this store's
_REGISTER_MANY = (
    "INSERT INTO comsa_migrate.file_contents AS c (sha256, size, store)"
    " SELECT u.sha256, u.size, 'db' FROM unnest(%s::text[], %s::bigint[])"
    " WITH ORDINALITY AS u(sha256, size, n) ORDER BY u.n"
    " ON CONFLICT (sha256) DO UPDATE SET stored_at = now(), store = 'db', size = EXCLUDED.size"
)
_CHUNKS_MANY = (
    "INSERT INTO comsa_migrate.file_chunks (sha256, seq, data)"
    " SELECT u.sha256, 0, u.data FROM unnest(%s::text[], %s::bytea[])"
    " WITH ORDINALITY AS u(sha256, data, n) ORDER BY u.n ON CONFLICT DO NOTHING"
)
_REGISTER = (
    "INSERT INTO comsa_migrate.file_contents (sha256, size, store) VALUES (%s, %s, 'db')"
    " ON CONFLICT (sha256) DO UPDATE SET stored_at = now(), store = 'db', size = EXCLUDED.size"
)


class DatabaseStore:
    """Contents in comsa_migrate.file_contents and file_chunks, on a connection of its own."""

    url = "db"

    def __init__(self, conn: psycopg.Connection[Any], limits: Limits = DEFAULT_LIMITS) -> None:
        self.conn = conn
        self.limits = limits

    def has(self, sha256: str) -> bool:
        return bool(self.held([sha256]))

    def held(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these contents the store holds, in one query."""
        if not sha256s:
            return set()
        rows = self.conn.execute(HELD, ("db", list(sha256s))).fetchall()
        return {sha for (sha,) in rows}

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        if size <= CHUNK_SIZE:
            self.put_many([(sha256, size, b"".join(chunks))])
            return
        with self.conn.transaction():
            self._begin()
            self.conn.execute(_LOCK, (sha256,))
            if self.conn.execute(_CLAIM, (sha256,)).fetchone() is not None:
                return
            # what a store before this one may have left of it
            self.conn.execute("DELETE FROM comsa_migrate.file_chunks WHERE sha256 = %s", (sha256,))
            with self.conn.cursor().copy(
                "COPY comsa_migrate.file_chunks (sha256, seq, data) FROM STDIN"
            ) as copy:
                for seq, chunk in enumerate(chunks):
                    copy.write_row((sha256, seq, chunk))
            self.conn.execute(_REGISTER, (sha256, size))

    def put_many(self, contents: Sequence[tuple[str, int, bytes]]) -> None:
        """Contents of one chunk each, (sha256, size, bytes), in one transaction (and one
        round trip where libpq has pipeline mode); those there already are refreshed. In
        sha256 order, so that two writers storing some of the same contents wait for each
        other rather than deadlock."""
        ordered = sorted({c[0]: c for c in contents}.values())
        shas = [c[0] for c in ordered]
        pipeline: contextlib.AbstractContextManager[Any] = (
            self.conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext()
        )
        with pipeline, self.conn.transaction():
            self._begin()
            self.conn.execute(_REGISTER_MANY, (shas, [c[1] for c in ordered]))
            self.conn.execute(_CHUNKS_MANY, (shas, [c[2] for c in ordered]))

    def _begin(self) -> None:
        """The tool's limits for the rest of the put's transaction, and no flush wait."""
        set_limits(self.conn, self.limits)
        self.conn.execute(_NO_FLUSH_WAIT)

    def read(self, sha256: str) -> Iterator[bytes]:
        if not self.has(sha256):
            raise KeyError(sha256)
        with self.conn.cursor() as cur:
            for (data,) in cur.stream(
                "SELECT data FROM comsa_migrate.file_chunks WHERE sha256 = %s ORDER BY seq",
                (sha256,),
            ):
                yield bytes(data)

    def drop(self, sha256: str) -> None:
        """Delete the content's bytes, in gc's transaction that deleted its registry row."""
        self.conn.execute("DELETE FROM comsa_migrate.file_chunks WHERE sha256 = %s", (sha256,))

    def delete(self, sha256: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s AND store = 'db'",
                (sha256,),
            )
            self.drop(sha256)

    def contents(self) -> Iterator[tuple[str, int]]:
        with self.conn.cursor() as cur:
            yield from cur.stream(
                "SELECT sha256, size FROM comsa_migrate.file_contents WHERE store = 'db'"
                " ORDER BY sha256"
            )

    def close(self) -> None:
        self.conn.close()
