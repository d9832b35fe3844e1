"""gc: only contents that no stored file names go, only with --yes, only when old enough."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.file_store import open_file_store
from comsa_migrate.file_store.gc import Garbage, collect_garbage
from comsa_migrate.pipeline import scheduler

from .file_store_helpers import content_of, digest, stored_rows
from .helpers import job_row, new_job_id, wait_until, write_job_atomically
from .s3_server import S3Server


def _held(url: str, dsn: str) -> set[str]:
    store = open_file_store(url, lambda: psycopg.connect(dsn, autocommit=True))
    try:
        return {sha for sha, _ in store.contents()}
    finally:
        store.close()


def _changed_output(cli: Any, dsn: str, data: Path, url: str) -> str:
    """A job whose output changed between two backfills: its first content is unnamed."""
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    (data / "outputs" / job_id / "causes.csv").write_text("first")
    cli("backfill", data, "--dsn", dsn, "--file-store", url)
    (data / "outputs" / job_id / "causes.csv").write_text("second")
    cli("backfill", data, "--dsn", dsn, "--file-store", url)
    return job_id


@pytest.mark.parametrize("where", ["db", "s3"])
def test_gc_deletes_only_unnamed_contents_and_only_with_yes(
    cli: Any, dsn: str, data: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = "db"
    if where == "s3":
        server: S3Server = request.getfixturevalue("s3_env")
        bucket = f"gc-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        url = f"s3://{bucket}/files"
    _changed_output(cli, dsn, data, url)
    named = {sha for sha, _, _ in stored_rows(dsn).values()}
    assert _held(url, dsn) == named | {digest(b"first")}

    dry = cli("gc", "--dsn", dsn, "--file-store", url, "--min-age", "0s")
    assert dry.exit_code == 0, dry.output
    assert "Would delete 1 content (5 bytes)" in dry.stdout
    assert _held(url, dsn) == named | {digest(b"first")}

    done = cli("gc", "--dsn", dsn, "--file-store", url, "--min-age", "0s", "--yes")
    assert done.exit_code == 0, done.output
    assert "Deleted 1 content (5 bytes)" in done.stdout
    assert _held(url, dsn) == named
    report = cli("report", data, "--dsn", dsn, "--file-store", url)
    assert report.exit_code == 0, report.output


def test_a_content_younger_than_min_age_is_spared(cli: Any, dsn: str, data: Path) -> None:
    _changed_output(cli, dsn, data, "db")

    result = cli("gc", "--dsn", dsn, "--file-store", "db", "--yes")  # the default: 1h

    assert "Nothing to delete" in result.stdout
    assert digest(b"first") in _held("db", dsn)


def _age_content(dsn: str, data: bytes, hours: float = 2) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE comsa_migrate.file_contents SET stored_at = now() - make_interval(hours => %s)"
            " WHERE sha256 = %s",
            [hours, digest(data)],
        )
        assert cur.rowcount == 1


def _s3_url(request: pytest.FixtureRequest, where: str) -> str:
    if where == "db":
        return "db"
    server: S3Server = request.getfixturevalue("s3_env")
    bucket = f"gc-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    return f"s3://{bucket}/files"


def _gc_waits_for_a_lock(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.parametrize("where", ["db", "s3"])
def test_gc_spares_a_content_that_a_job_names_in_a_transaction_not_yet_committed(
    cli: Any, dsn: str, data: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = _s3_url(request, where)
    _changed_output(cli, dsn, data, url)
    _age_content(dsn, b"first")  # unnamed for two hours
    other_job = new_job_id()
    record = {
        "id": other_job,
        "store": url,
        "files": [[f"outputs/{other_job}/causes.csv", digest(b"first"), 5, 0]],
        "present": [f"outputs/{other_job}/causes.csv"],
    }
    done: list[Garbage] = []
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as gc_conn:
        # the writer found the content there, and its job's transaction names it
        writer.execute("SELECT comsa_migrate.record_stored_files(%s)", [json.dumps(record)])
        gc = threading.Thread(
            target=lambda: done.append(collect_garbage(gc_conn, url, delete=True)),
        )
        gc.start()
        wait_until(
            lambda: not gc.is_alive() or _gc_waits_for_a_lock(dsn, gc_conn.info.backend_pid),
            what="gc to end or to wait for the writer",
        )
        writer.commit()
        gc.join(30)

    assert done and done[0].unnamed == 0
    assert stored_rows(dsn)[f"outputs/{other_job}/causes.csv"][0] == digest(b"first")
    assert content_of(dsn, digest(b"first"), url) == b"first"
    report = cli("report", data, "--dsn", dsn, "--file-store", url)
    assert report.exit_code == 0, report.output


def _gc_after_the_puts(
    monkeypatch: pytest.MonkeyPatch, dsn: str, min_age: timedelta, done: list[Garbage]
) -> None:
    """gc runs on a connection of its own once a batch's contents are put (or found there),
    before the batch's jobs are written."""
    real = scheduler.keep_contents

    def keep_then_gc(conn: Any, url: str, *args: Any) -> Any:
        records = real(conn, url, *args)
        with psycopg.connect(dsn, autocommit=True) as other:
            done.append(collect_garbage(other, url, delete=True, min_age=min_age))
        return records

    monkeypatch.setattr(scheduler, "keep_contents", keep_then_gc)


def _empty_output(data: Path) -> str:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    (data / "outputs" / job_id / "warnings.txt").write_bytes(b"")
    return job_id


def test_a_content_a_writer_finds_there_is_spared_by_min_age_until_its_job_commits(
    cli: Any, dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _empty_output(data)
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    (data / "outputs" / first / "warnings.txt").write_text("now a warning")
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    _age_content(dsn, b"")  # the empty content, unnamed for two hours
    done: list[Garbage] = []
    _gc_after_the_puts(monkeypatch, dsn, timedelta(hours=1), done)

    second = _empty_output(data)
    result = cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    assert result.exit_code == 0, result.output
    assert [g.unnamed for g in done] == [0]
    assert stored_rows(dsn)[f"outputs/{second}/warnings.txt"][0] == digest(b"")
    assert content_of(dsn, digest(b"")) == b""


def test_a_job_naming_a_content_gc_deleted_meanwhile_fails_and_the_next_run_stores_it(
    cli: Any, dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _empty_output(data)
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    (data / "outputs" / first / "warnings.txt").write_text("now a warning")
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    done: list[Garbage] = []
    with monkeypatch.context() as patched:
        _gc_after_the_puts(patched, dsn, timedelta(0), done)  # a gc that spares nothing
        second = _empty_output(data)
        raced = cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    assert [g.unnamed for g in done] == [2]  # the empty content, and the new JSON's
    assert f"outputs/{second}/warnings.txt" not in stored_rows(dsn)  # its job failed whole
    assert "gc deleted it meanwhile" in raced.output
    assert job_row(dsn, second) is None
    again = cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    assert again.exit_code == 0, again.output
    assert stored_rows(dsn)[f"outputs/{second}/warnings.txt"][0] == digest(b"")
    assert content_of(dsn, digest(b"")) == b""
    report = cli("report", data, "--dsn", dsn, "--file-store", "db")
    assert report.exit_code == 0, report.output


def test_gc_needs_a_store(cli: Any, dsn: str) -> None:
    result = cli("gc", "--dsn", dsn)

    assert result.exit_code == 2
    assert "--file-store is required" in result.output
