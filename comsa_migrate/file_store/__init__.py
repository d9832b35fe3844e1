"""Where the contents of jobs' files are kept: in the target database, or in an object store.

A store holds contents by their sha256, each once: ``put`` is idempotent, ``has`` says
whether a content is there whole, ``read`` gives its bytes back in chunks. Which file of
which job had which content is recorded apart, in ``comsa_migrate.stored_files``
(schema/008_file_store.sql), in the job's own transaction.

``--file-store URL`` names the store: ``db`` for the target database, or
``s3://bucket/prefix`` for any S3 API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import psycopg

from comsa_migrate.errors import ConfigurationError

__all__ = ["CHUNK_SIZE", "FileStore", "open_file_store"]

#: contents are read, sent and stored in pieces of this size, so memory stays flat
CHUNK_SIZE = 1 << 20


class FileStore(Protocol):
    """Contents by sha256 (64 lowercase hex digits)."""

    #: the URL it was opened from, without credentials (for messages)
    url: str

    def has(self, sha256: str) -> bool: ...

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store a content whole, or not at all; nothing if it is there already."""

    def read(self, sha256: str) -> Iterator[bytes]:
        """The content's bytes, in chunks; KeyError if the store does not hold it."""

    def delete(self, sha256: str) -> None: ...

    def contents(self) -> Iterator[tuple[str, int]]:
        """Every content held: its sha256 and its size."""

    def close(self) -> None: ...


def open_file_store(url: str, connect: Callable[[], psycopg.Connection[Any]]) -> FileStore:
    """The store ``url`` names; ``connect`` opens a connection to the target database."""
    if url == "db":
        from comsa_migrate.file_store.database import DatabaseStore

        return DatabaseStore(connect())
    if url.startswith("s3://"):
        from comsa_migrate.file_store.s3 import ObjectStore

        return ObjectStore(url)
    raise ConfigurationError(
        f"--file-store: {url!r} is not a store; use `db` or s3://bucket/prefix"
    )
