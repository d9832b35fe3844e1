"""gc: only contents that no stored file names go, only with --yes, only when old enough."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.file_store import open_file_store
from comsa_migrate.file_store.database import DatabaseStore
from comsa_migrate.file_store.gc import collect_garbage

from .file_store_helpers import digest, stored_rows
from .helpers import new_job_id, write_job_atomically
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


def test_a_content_named_again_while_gc_deletes_it_sends_its_job_to_be_read_again(
    cli: Any, dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _changed_output(cli, dsn, data, "db")
    real_delete = DatabaseStore.delete

    def named_meanwhile(self: DatabaseStore, sha256: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as other:  # a writer that found it there
            other.execute(
                "INSERT INTO comsa_migrate.stored_files (job_id, path, sha256, size, mtime_ns)"
                " VALUES (%s, 'outputs/x/old.csv', %s, 5, 0)",
                [job_id, sha256],
            )
        real_delete(self, sha256)

    monkeypatch.setattr(DatabaseStore, "delete", named_meanwhile)
    with psycopg.connect(dsn, autocommit=True) as conn:
        garbage = collect_garbage(conn, "db", delete=True, min_age=timedelta(0))

    assert garbage.renamed == 1
    assert "outputs/x/old.csv" not in stored_rows(dsn)  # no row names a content gone
    assert _fingerprint(dsn, job_id).startswith("read again")
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    assert not _fingerprint(dsn, job_id).startswith("read again")  # the job was read again


def _fingerprint(dsn: str, job_id: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT fingerprint FROM comsa_migrate.job_state WHERE job_id = %s", [job_id]
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_gc_needs_a_store(cli: Any, dsn: str) -> None:
    result = cli("gc", "--dsn", dsn)

    assert result.exit_code == 2
    assert "--file-store is required" in result.output
