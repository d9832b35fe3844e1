"""The `db` file store on a real database: contents by sha256, whole or not at all."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import psycopg
import pytest

from comsa_migrate.errors import ConfigurationError
from comsa_migrate.file_store import CHUNK_SIZE, open_file_store


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]


def test_a_content_goes_in_once_and_comes_back_byte_for_byte(dsn: str) -> None:
    data = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)  # four chunks, the last short
    store = open_file_store("db", lambda: psycopg.connect(dsn, autocommit=True))
    try:
        assert not store.has(_digest(data))
        store.put(_digest(data), len(data), _chunks(data))
        store.put(_digest(data), len(data), _chunks(data))  # nothing: it is there
        assert store.has(_digest(data))
        assert b"".join(store.read(_digest(data))) == data
        assert list(store.contents()) == [(_digest(data), len(data))]
        with pytest.raises(KeyError):
            list(store.read(_digest(b"other")))
    finally:
        store.close()
    with psycopg.connect(dsn) as conn:
        chunks = conn.execute("SELECT count(*) FROM comsa_migrate.file_chunks").fetchone()
    assert chunks == (4,)


def test_an_empty_file_is_a_content_too(dsn: str) -> None:
    store = open_file_store("db", lambda: psycopg.connect(dsn, autocommit=True))
    store.put(_digest(b""), 0, [b""])
    assert b"".join(store.read(_digest(b""))) == b""
    store.delete(_digest(b""))
    assert not store.has(_digest(b""))
    store.close()


def test_a_put_that_fails_half_way_leaves_nothing(dsn: str) -> None:
    store = open_file_store("db", lambda: psycopg.connect(dsn, autocommit=True))

    def failing() -> Any:
        yield b"a" * CHUNK_SIZE
        raise OSError("the file went away")

    with pytest.raises(OSError):
        store.put(_digest(b"x"), 2 * CHUNK_SIZE, failing())
    assert not store.has(_digest(b"x"))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM comsa_migrate.file_chunks").fetchone() == (0,)
    store.close()


def test_two_writers_storing_one_content_store_it_once(dsn: str) -> None:
    data = b"same bytes" * 1000
    errors: list[BaseException] = []

    def put() -> None:
        store = open_file_store("db", lambda: psycopg.connect(dsn, autocommit=True))
        try:
            for _ in range(20):
                store.put(_digest(data), len(data), _chunks(data))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=put) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM comsa_migrate.file_chunks").fetchone() == (1,)


def test_an_unknown_store_is_refused_in_words() -> None:
    with pytest.raises(ConfigurationError, match="is not a store"):
        open_file_store("ftp://somewhere", lambda: None)  # type: ignore[arg-type,return-value]


def test_two_writers_storing_many_of_the_same_contents_neither_deadlock_nor_double(
    dsn: str,
) -> None:
    from comsa_migrate.file_store.database import DatabaseStore

    contents = [(_digest(bytes([i])), 1, bytes([i])) for i in range(200)]
    errors: list[BaseException] = []

    def put_many(order: list[tuple[str, int, bytes]]) -> None:
        store = DatabaseStore(psycopg.connect(dsn, autocommit=True))
        try:
            for _ in range(5):
                store.put_many(order)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [
        threading.Thread(target=put_many, args=(order,))
        for order in (contents, list(reversed(contents)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM comsa_migrate.file_contents").fetchone() == (200,)
        assert conn.execute("SELECT count(*) FROM comsa_migrate.file_chunks").fetchone() == (200,)


def test_recording_a_jobs_stored_files_waits_for_the_jobs_lock(dsn: str) -> None:
    """A sidecar's record (no apply_job() before it) takes the job's lock itself: a daemon
    and a backfill recording the same job wait for each other instead of deadlocking."""
    job = "5f0c1d2e-0000-4000-8000-00000000abcd"
    record = f'{{"id": "{job}", "files": [], "present": []}}'
    with (
        psycopg.connect(dsn) as holder,
        psycopg.connect(dsn, autocommit=True) as writer,
    ):
        holder.execute("SELECT comsa_migrate.lock_job(%s)", (job,))  # a transaction open
        writer.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            writer.execute("SELECT comsa_migrate.record_stored_files(%s)", (record,))
        holder.commit()
        answer = writer.execute("SELECT comsa_migrate.record_stored_files(%s)", (record,))
        assert answer.fetchone() is not None
