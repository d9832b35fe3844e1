"""One of a thing per thread: a store reads on a connection (or client) of its own, and a
connection serves one thread at a time, so threads that read get one each."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from comsa_migrate.file_store import FileStore, open_file_store

__all__ = ["PerThread", "StorePerThread"]


class _Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_Closable)


class PerThread(Generic[T]):
    """What ``make`` makes, made once in each thread that asks for it, and closed together."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._local = threading.local()
        self._made: list[T] = []
        self._lock = threading.Lock()

    def get(self) -> T:
        made: T | None = getattr(self._local, "made", None)
        if made is None:
            made = self._make()
            self._local.made = made
            with self._lock:
                self._made.append(made)
        return made

    def close(self) -> None:
        """Close each, all of them even if one fails (its error is raised after)."""
        with self._lock:
            made, self._made = self._made, []
        with contextlib.ExitStack() as closing:
            for each in made:
                closing.callback(each.close)


class StorePerThread(PerThread[FileStore]):
    """The store ``url`` names, opened once in each thread that reads from it."""

    def __init__(self, url: str, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        super().__init__(lambda: open_file_store(url, connect))
        self.url = url

    def read(self, sha256: str) -> Iterator[bytes]:
        """The content's chunks, read by this thread's store; KeyError if it is not held."""
        return self.get().read(sha256)
