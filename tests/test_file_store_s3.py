"""The s3:// file store against a real S3 API (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.errors import FileStoreError
from comsa_migrate.file_store import CHUNK_SIZE, open_file_store
from comsa_migrate.file_store.s3 import ObjectStore

from .file_store_helpers import content_of, digest, job_with_outputs, stored_rows
from .helpers import job_row, running_daemon, wait_until
from .s3_server import S3Server

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def _bucket(server: S3Server) -> str:
    name = f"comsa-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


def _store(url: str) -> Any:
    return open_file_store(url, lambda: None)  # type: ignore[arg-type,return-value]


def test_a_content_goes_in_once_and_comes_back_byte_for_byte(s3_env: S3Server) -> None:
    store = _store(f"s3://{_bucket(s3_env)}/files")
    small, large = b"cause,n\n", bytes(range(256)) * (20 * CHUNK_SIZE // 256 + 3)
    for data in (small, large):
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        store.put(digest(data), len(data), chunks)
        store.put(digest(data), len(data), chunks)  # there already: nothing

    assert b"".join(store.read(digest(small))) == small
    assert b"".join(store.read(digest(large))) == large  # in parts of its own
    assert sorted(store.contents()) == sorted([(digest(small), 8), (digest(large), len(large))])
    with pytest.raises(KeyError):
        list(store.read(digest(b"other")))
    store.delete(digest(small))
    assert not store.has(digest(small))


def test_a_put_whose_chunks_fail_leaves_no_object(s3_env: S3Server) -> None:
    store = _store(f"s3://{_bucket(s3_env)}/files")

    def failing() -> Any:
        for _ in range(10):
            yield b"a" * CHUNK_SIZE
        raise OSError("the file changed while it was stored")

    with pytest.raises(Exception):  # noqa: B017, PT011 - the library may wrap it
        store.put(digest(b"x"), 12 * CHUNK_SIZE, failing())

    assert not store.has(digest(b"x"))
    assert list(store.contents()) == []


def test_backfill_keeps_every_content_as_one_object_named_by_its_sha256(
    cli: Any, dsn: str, data: Path, s3_env: S3Server
) -> None:
    bucket = _bucket(s3_env)
    job_id = job_with_outputs(
        data, {"causes.csv": b"cause,n\nsepsis,3\n", "copy.csv": b"cause,n\nsepsis,3\n"}
    )

    result = cli("backfill", data, "--dsn", dsn, "--file-store", f"s3://{bucket}/comsa/files")

    assert result.exit_code == 0, result.output
    rows = stored_rows(dsn)
    assert set(rows) == {
        f"jobs/{job_id}.json",
        f"outputs/{job_id}/causes.csv",
        f"outputs/{job_id}/copy.csv",
    }
    names = {sha for sha, _ in _store(f"s3://{bucket}/comsa/files").contents()}
    assert names == {sha for sha, _, _ in rows.values()}  # two contents: one per sha256
    sha = rows[f"outputs/{job_id}/causes.csv"][0]
    assert content_of(dsn, sha, f"s3://{bucket}/comsa/files") == b"cause,n\nsepsis,3\n"
    report = cli("report", data, "--dsn", dsn, "--file-store", f"s3://{bucket}/comsa/files")
    assert report.exit_code == 0, report.output
    assert "2 contents" in report.stdout


def test_an_unknown_bucket_stops_the_run_at_its_start_in_one_line(
    cli: Any, dsn: str, data: Path, s3_env: S3Server
) -> None:
    job_with_outputs(data, {"causes.csv": b"x"})

    result = cli("backfill", data, "--dsn", dsn, "--file-store", "s3://no-such-bucket/files")

    assert result.exit_code == 2
    assert "file store s3://no-such-bucket/files" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert job_row(dsn, json.loads(next((data / "jobs").glob("*.json")).read_text())["id"]) is None


def test_an_unreachable_endpoint_stops_the_daemon_at_its_start(
    cli: Any, dsn: str, data: Path, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there

    result = cli("sync", data, "--dsn", dsn, "--file-store", "s3://bucket/files")

    assert result.exit_code == 2
    assert "file store s3://bucket/files" in result.output and "Traceback" not in result.output


def test_a_store_failing_mid_run_stops_it_with_nothing_half_written(
    cli: Any, dsn: str, data: Path, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3_env)
    job_id = job_with_outputs(data, {"causes.csv": b"cause,n\n"})

    def refused(self: ObjectStore, sha256: str, size: int, chunks: Any) -> None:
        raise FileStoreError(f"file store {self.url}: cannot store {sha256}: quota exceeded")

    monkeypatch.setattr(ObjectStore, "put", refused)
    result = cli("backfill", data, "--dsn", dsn, "--file-store", f"s3://{bucket}/f")

    assert result.exit_code == 4
    assert "quota exceeded" in result.output
    assert job_row(dsn, job_id) is None and stored_rows(dsn) == {}  # the batch: not written


def test_the_daemon_waits_out_a_failing_store_and_keeps_the_files_once_it_is_back(
    dsn: str,
    data: Path,
    s3_env: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store's outage is its own: logged once as the store's and once over, tried
    again after a pause that new jobs do not cut short, and the database session (its
    registration, its heartbeat) is kept meanwhile."""
    bucket = _bucket(s3_env)
    real_put = ObjectStore.put
    down_until = time.monotonic() + 3600.0
    attempts: list[float] = []

    def flaky(self: ObjectStore, sha256: str, size: int, chunks: Any) -> None:
        if time.monotonic() < down_until:
            attempts.append(time.monotonic())
            raise FileStoreError(f"file store {self.url}: cannot store {sha256}: unavailable")
        real_put(self, sha256, size, chunks)

    monkeypatch.setattr(ObjectStore, "put", flaky)
    caplog.set_level(logging.INFO, logger="comsa_migrate")
    with running_daemon(dsn, data, file_store=f"s3://{bucket}/f") as daemon:
        first = job_with_outputs(data, {"causes.csv": b"cause,n\n"})
        wait_until(lambda: len(attempts) >= 1, 20, "the store to fail")
        beat_before = _heartbeat(dsn)
        for n in range(30):  # events keep coming while the store is down
            job_with_outputs(data, {f"out{n}.csv": b"%d" % n})
            time.sleep(0.03)
        assert _heartbeat(dsn) > beat_before  # the heartbeat goes on
        down_until = time.monotonic()  # the store is back
        wait_until(lambda: f"outputs/{first}/causes.csv" in stored_rows(dsn), 20, "the file kept")
        stats = daemon.stats()

    # retry_max is 0.5 s here: about a second of outage is a few attempts, not one an event
    assert 2 <= len(attempts) <= 8, attempts
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("the file store is unavailable")]) == 1
    assert len([m for m in messages if m.startswith("the file store is back")]) == 1
    assert not [m for m in messages if "database is unavailable" in m]
    assert stats["outages"] == 1
    with psycopg.connect(dsn) as conn:  # registered once: the session was never dropped
        assert conn.execute("SELECT count(*) FROM comsa_migrate.daemons").fetchone() == (1,)
    assert job_row(dsn, first) is not None
    key = hashlib.sha256(b"cause,n\n").hexdigest()
    assert b"".join(_store(f"s3://{bucket}/f").read(key)) == b"cause,n\n"


def _heartbeat(dsn: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT max(heartbeat_at) FROM comsa_migrate.daemons").fetchone()
    assert row is not None
    return row[0]


def test_a_database_fault_met_while_storing_is_the_databases_outage(
    dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The `db` store's failures are the database's: the daemon reconnects, as it does
    when the database goes away."""
    from comsa_migrate.file_store.database import DatabaseStore

    real_put_many = DatabaseStore.put_many
    failed: list[int] = []

    def lost(self: DatabaseStore, contents: Any) -> None:
        if not failed:
            failed.append(1)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        real_put_many(self, contents)

    monkeypatch.setattr(DatabaseStore, "put_many", lost)
    caplog.set_level(logging.INFO, logger="comsa_migrate")
    with running_daemon(dsn, data, file_store="db") as daemon:
        job_id = job_with_outputs(data, {"causes.csv": b"cause,n\n"})
        wait_until(lambda: job_row(dsn, job_id) is not None, 20, "the job written")
        stats = daemon.stats()

    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if m.startswith("the database is unavailable")]
    assert not [m for m in messages if "file store is unavailable" in m]
    assert stats["outages"] == 1


def test_restore_from_a_store_that_cannot_be_used_or_holds_none_of_the_files_is_exit_2(
    cli: Any, dsn: str, data: Path, tmp_path: Path, s3_env: S3Server
) -> None:
    """As the pod's init step runs it (--missing-ok): an unknown bucket, or the default `db`
    store when the files are in S3, would have restored nothing and exited 0, and the
    dashboard would have started on an empty data/."""
    url = f"s3://{_bucket(s3_env)}/files"
    job_with_outputs(data, {"causes.csv": b"cause,n\n"})
    assert cli("backfill", data, "--dsn", dsn, "--file-store", url).exit_code == 0
    target = tmp_path / "restored" / "data"

    unknown = cli("restore", target, "--dsn", dsn, "--missing-ok", "--file-store", "s3://nope-x/f")
    elsewhere = cli("restore", target, "--dsn", dsn, "--missing-ok")
    exported = cli("export", target, "--dsn", dsn)
    gc = cli("gc", "--dsn", dsn, "--file-store", "s3://nope-x/f")
    right = cli("restore", target, "--dsn", dsn, "--missing-ok", "--file-store", url)

    for refused in (unknown, elsewhere, exported, gc):
        assert refused.exit_code == 2, refused.output
        assert "Traceback" not in refused.output
    assert "file store s3://nope-x/f" in unknown.output
    assert f"the registry has them in {url} (2)" in elsewhere.output
    assert "file store s3://nope-x/f" in gc.output
    assert right.exit_code == 0, right.output
    assert (target / "outputs").is_dir()


def test_an_endpoint_that_accepts_but_never_answers_fails_the_run_within_a_minute(
    cli: Any, dsn: str, data: Path, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled S3 endpoint (a server stopped, a proxy that hangs): the connection is made,
    no answer comes. The client's own defaults retried for three minutes; the store's
    request limits make it an error in well under one, so a run (and the daemon's stop)
    is not held that long."""
    job_with_outputs(data, {"causes.csv": b"x"})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel; nobody ever reads them
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()

        result = cli("backfill", data, "--dsn", dsn, "--file-store", "s3://bucket/files")

        took = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert "file store s3://bucket/files" in result.output and "Traceback" not in result.output
    assert took < 60, f"{took:.0f} s"
