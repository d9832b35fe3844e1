"""One file store per thread: a store reads on a connection (or client) of its own, which two
threads must not share while one streams a content."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from comsa_migrate.file_store import FileStore, open_file_store

__all__ = ["StorePerThread"]


class StorePerThread:
    """The store ``url`` names, opened once in each thread that reads from it."""

    def __init__(self, url: str, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self.url = url
        self._connect = connect
        self._local = threading.local()
        self._opened: list[FileStore] = []
        self._lock = threading.Lock()

    def get(self) -> FileStore:
        store: FileStore | None = getattr(self._local, "store", None)
        if store is None:
            store = open_file_store(self.url, self._connect)
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def read(self, sha256: str) -> Iterator[bytes]:
        """The content's chunks, read by this thread's store; KeyError if it is not held."""
        return self.get().read(sha256)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            store.close()
