"""Large files: an upload too large to travel inside its job's payload is streamed into the
job's own transaction, reaches job_input_files whole while the client's memory stays flat,
and leaves nothing behind when the job's write is refused; a large job JSON costs a
bounded multiple of its size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.memory import b64_sha256, backfill_peak, large_file, stored_sha256, tree
from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.plan import Recorder, prepare
from comsa_migrate.core.tree import scan
from comsa_migrate.db.migrations import create_input_files_table
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.pipeline.scheduler import applying

MIB = 1024 * 1024


@pytest.fixture
def upload_dsn(dsn: str) -> str:
    """A migrated database with the dashboard's job_input_files."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_input_files_table(conn)
    return dsn


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else -1


def _staged_rows(conn: psycopg.Connection[Any]) -> int:
    return _count(conn, "comsa_migrate.upload_chunks")


@pytest.mark.slow
def test_a_40_mb_upload_reaches_job_input_files_whole_and_the_clients_memory_stays_flat(
    upload_dsn: str, tmp_path: Path
) -> None:
    small = tree(tmp_path / "small" / "data", "upload", 0)
    large = tree(tmp_path / "large" / "data", "upload", 40 * MIB)
    upload = large_file(large, "upload")

    ordinary_peak, first = backfill_peak(upload_dsn, small)
    large_peak, second = backfill_peak(upload_dsn, large)  # the same job, its upload now large

    assert "identical" in first and "identical" in second  # the CLI's backfill, checked
    growth = (large_peak - ordinary_peak) * 1024
    assert growth < upload.stat().st_size / 4, f"the peak grew by {growth / MIB:.1f} MiB"
    with psycopg.connect(upload_dsn, autocommit=True) as conn:
        assert stored_sha256(conn, upload.name) == b64_sha256(upload)
        assert conn.execute(
            "SELECT content_b64 !~ '[^A-Za-z0-9+/=]' FROM job_input_files"
        ).fetchone() == (True,)  # no newline, as the dashboard reads it
        assert _staged_rows(conn) == 0


@pytest.mark.slow
def test_a_20_mb_job_json_costs_at_most_five_times_its_size_at_the_peak(
    upload_dsn: str, tmp_path: Path
) -> None:
    small = tree(tmp_path / "small" / "data", "json", 0)
    large = tree(tmp_path / "large" / "data", "json", 20 * MIB)  # 260,000 log lines

    ordinary_peak, _ = backfill_peak(upload_dsn, small)
    large_peak, checked = backfill_peak(upload_dsn, large)

    growth = (large_peak - ordinary_peak) * 1024
    size = large_file(large, "json").stat().st_size
    assert growth < 5 * size, f"the peak grew by {growth / size:.2f}x the JSON's size"
    assert "identical" in checked
    with psycopg.connect(upload_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) > 200000 FROM job_logs").fetchone() == (True,)


@pytest.mark.parametrize("change", ["rewritten", "removed"])
def test_an_upload_changed_between_its_two_reads_refuses_its_job_and_nothing_is_left(
    upload_dsn: str, tmp_path: Path, change: str
) -> None:
    data = tree(tmp_path / "data", "upload", 3 * MIB)  # over the 1 MiB carried inline
    upload = large_file(data, "upload")
    write = WriteOptions(connections=1)
    with psycopg.connect(upload_dsn, autocommit=True) as conn:
        [source] = [item for item in scan(data) if isinstance(item, JobSource)]
        reading = write.reading(data, write.settings(conn))
        batch = prepare(reading, [source], set(), Recorder())
        assert batch is not None and len(batch.uploads[0]) == 1  # its digest taken, not sent
        if change == "rewritten":
            upload.write_bytes(upload.read_bytes()[::-1])
        else:
            upload.unlink()

        [outcome] = applying(write, None, data)(conn, batch)

        assert outcome.action == "error"
        assert outcome.message is not None and "changed while it was read" in outcome.message
        assert _count(conn, "jobs") == _count(conn, "job_input_files") == 0
        assert _count(conn, "comsa_migrate.job_state") == 0
        assert _staged_rows(conn) == 0
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

        summary = backfill(conn, BackfillOptions(data))  # the next run writes the job as it is now

        assert summary.actions["insert"] == 1
        uploads = 0 if change == "removed" else 1
        assert _count(conn, "job_input_files") == uploads
        if uploads:
            assert stored_sha256(conn, upload.name) == b64_sha256(upload)


def test_a_large_upload_the_table_already_holds_is_not_written_again(
    upload_dsn: str, tmp_path: Path
) -> None:
    data = tree(tmp_path / "data", "upload", 3 * MIB)  # streamed
    notes = large_file(data, "upload").with_name("notes.csv")
    notes.write_text("id,note\n1,first\n")
    versions = "SELECT filename, xmin::text FROM job_input_files ORDER BY filename"
    with psycopg.connect(upload_dsn, autocommit=True) as conn:
        backfill(conn, BackfillOptions(data))
        before = dict(conn.execute(versions).fetchall())
        assert set(before) == {"input.csv", "notes.csv"}

        unchanged = backfill(
            conn, BackfillOptions(data, WriteOptions(force=True))
        )  # read and sent again
        notes.write_text("id,note\n1,second\n")
        updated = backfill(conn, BackfillOptions(data))

        assert unchanged.actions["unchanged"] == 1
        assert (updated.actions["update"], updated.rows["job_input_files"]) == (1, 1)
        after = dict(conn.execute(versions).fetchall())
        assert after["input.csv"] == before["input.csv"]  # not joined, nor rewritten
        assert after["notes.csv"] != before["notes.csv"]
        assert stored_sha256(conn, "input.csv") == b64_sha256(large_file(data, "upload"))
        assert _staged_rows(conn) == 0
