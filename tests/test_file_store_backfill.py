"""backfill --file-store db: every job's files kept, once, before the rows that name them."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate import BackfillOptions, WriteOptions, backfill
from comsa_migrate.file_store import CHUNK_SIZE, keeping

from .file_store_helpers import (
    age,
    content_of,
    dashboard_row,
    digest,
    files_on_disk,
    insert_dashboard_job,
    stored_at,
    stored_rows,
    write_sidecar,
)
from .helpers import job_counts, new_job_id, write_job_atomically

#: the sample's 11 job JSONs and the 16 files of its jobs (job_files)
SAMPLE_FILES = 27


def test_every_file_of_every_job_is_kept_byte_for_byte(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    result = cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "db")

    assert result.exit_code == 0, result.output
    rows = stored_rows(dsn)
    on_disk = files_on_disk(sample_tree)
    jobs = {path for path in rows if path.startswith("jobs/")}
    assert len(jobs) == 11  # each job's JSON, as the dashboard reads it over the row
    assert len(rows) == SAMPLE_FILES
    for path, (sha, size, present) in rows.items():
        assert present and size == len(on_disk[path])
        assert content_of(dsn, sha) == on_disk[path]
    with psycopg.connect(dsn) as conn:
        contents = conn.execute("SELECT count(*) FROM comsa_migrate.file_contents").fetchone()
    assert contents == (len({sha for sha, _, _ in rows.values()}),)  # each content once
    assert "contents kept in db" in result.stdout


def test_the_same_bytes_under_two_paths_are_stored_once(cli: Any, dsn: str, data: Path) -> None:
    for job_id in (new_job_id(), new_job_id()):
        write_job_atomically(data, job_id)
        (data / "outputs" / job_id).mkdir()
        (data / "outputs" / job_id / "causes.csv").write_text("cause,n\nsepsis,3\n")

    cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    with psycopg.connect(dsn) as conn:
        named = conn.execute(
            "SELECT count(*) FROM comsa_migrate.stored_files WHERE path LIKE 'outputs/%'"
        ).fetchone()
        held = conn.execute(
            "SELECT count(*) FROM comsa_migrate.file_contents WHERE sha256 = %s",
            [digest(b"cause,n\nsepsis,3\n")],
        ).fetchone()
    assert (named, held) == ((2,), (1,))


def test_a_rerun_reads_and_sends_no_unchanged_file(
    cli: Any, dsn: str, sample_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "db")
    before = stored_at(dsn)
    hashed: list[int] = []
    real_hash = keeping._hash
    monkeypatch.setattr(keeping, "_hash", lambda fd: hashed.append(fd) or real_hash(fd))

    rerun = cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "db", "--force")

    assert rerun.exit_code == 0, rerun.output
    assert hashed == []  # --force re-reads every job, yet no file of it is read again
    assert stored_at(dsn) == before


def test_a_changed_file_is_stored_again_and_a_removed_one_keeps_its_last_content(
    cli: Any, dsn: str, data: Path
) -> None:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    outputs = data / "outputs" / job_id
    outputs.mkdir()
    (outputs / "causes.csv").write_text("first")
    (outputs / "plot.png").write_bytes(b"\x89PNG old")
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    (outputs / "causes.csv").write_text("second, longer")
    (outputs / "plot.png").unlink()
    rerun = cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    assert rerun.exit_code == 0, rerun.output
    rows = stored_rows(dsn)
    causes = rows[f"outputs/{job_id}/causes.csv"]
    plot = rows[f"outputs/{job_id}/plot.png"]
    assert causes == (digest(b"second, longer"), 14, True)
    assert plot == (digest(b"\x89PNG old"), 8, False)
    assert content_of(dsn, plot[0]) == b"\x89PNG old"


def test_the_first_run_with_a_store_reads_every_job_once(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)  # no store: nothing kept
    assert stored_rows(dsn) == {}

    with_store = cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "db")
    again = cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "db")

    assert job_counts(with_store.stdout) == (0, 0, 11, 0, 0)  # the rows are unchanged
    assert len(stored_rows(dsn)) == SAMPLE_FILES
    assert job_counts(again.stdout) == (0, 0, 11, 0, 0)


def test_the_dashboards_own_job_keeps_its_files_and_its_row_is_untouched(
    cli: Any, dsn: str, data: Path
) -> None:
    own, legacy = new_job_id(), new_job_id()
    insert_dashboard_job(dsn, own)
    insert_dashboard_job(dsn, legacy)  # a legacy JSON of a job the dashboard wrote: a conflict
    write_sidecar(data, own)
    write_job_atomically(data, legacy)
    for job_id in (own, legacy):
        (data / "outputs" / job_id).mkdir()
        (data / "outputs" / job_id / "causes.csv").write_text(f"{job_id}\n")
    rows_before = {job_id: dashboard_row(dsn, job_id) for job_id in (own, legacy)}

    result = cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    assert result.exit_code == 1, result.output  # the conflict, as without a store
    assert {job_id: dashboard_row(dsn, job_id) for job_id in (own, legacy)} == rows_before
    rows = stored_rows(dsn)
    for job_id in (own, legacy):
        assert f"jobs/{job_id}.json" in rows
        sha, _, _ = rows[f"outputs/{job_id}/causes.csv"]
        assert content_of(dsn, sha) == f"{job_id}\n".encode()


def test_a_large_file_is_streamed_in_chunks_never_held_whole(dsn: str, data: Path) -> None:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    big = data / "outputs" / job_id / "posterior.rds"
    with big.open("wb") as fh:
        for i in range(48):
            fh.write(bytes([i]) * CHUNK_SIZE)
    age(big)
    options = BackfillOptions(data, WriteOptions(file_store="db", connections=1))

    with psycopg.connect(dsn, autocommit=True) as conn:
        tracemalloc.start()
        try:
            backfill(conn, options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert peak < 12 * CHUNK_SIZE, f"{peak / CHUNK_SIZE:.1f} MiB for a 48 MiB file"
    sha, size, _ = stored_rows(dsn)[f"outputs/{job_id}/posterior.rds"]
    assert size == 48 * CHUNK_SIZE and sha == digest(big.read_bytes())


def test_an_unknown_store_is_a_usage_error_before_anything_is_written(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    result = cli("backfill", sample_tree, "--dsn", dsn, "--file-store", "ftp://files")

    assert result.exit_code == 2
    assert "is not a store" in result.output


@pytest.mark.parametrize("writers", ["1", "3"])
def test_every_writer_keeps_the_contents_of_its_own_batches(
    cli: Any, dsn: str, sample_tree: Path, writers: str
) -> None:
    args = ("--file-store", "db", "--batch-size", "2", "--jobs", writers)
    result = cli("backfill", sample_tree, "--dsn", dsn, *args)

    assert result.exit_code == 0, result.output
    assert len(stored_rows(dsn)) == SAMPLE_FILES


def test_a_file_that_changes_while_it_is_read_is_left_for_the_next_run(
    cli: Any, dsn: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    growing = data / "outputs" / job_id / "log.txt"
    growing.write_text("first line\n")
    real_hash = keeping._hash

    def hash_while_written(fd: int) -> Any:
        hashed = real_hash(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == str(growing) and hashed[1] == 11:
            with growing.open("a") as fh:
                fh.write("second line\n")
        return hashed

    monkeypatch.setattr(keeping, "_hash", hash_while_written)
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    assert f"outputs/{job_id}/log.txt" not in stored_rows(dsn)  # its stat moved: not recorded

    monkeypatch.setattr(keeping, "_hash", real_hash)
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    sha, size, _ = stored_rows(dsn)[f"outputs/{job_id}/log.txt"]
    assert content_of(dsn, sha) == b"first line\nsecond line\n" and size == 23


def test_the_files_of_a_job_skipped_for_its_json_are_kept_and_no_row_is_written(
    cli: Any, dsn: str, data: Path
) -> None:
    """A job whose JSON cannot be read as a job loses no file with the legacy server: its
    JSON and outputs are kept (restore brings them back as they were), it is still a
    `skip`, and no row names it."""
    job_id = new_job_id()
    (data / "jobs" / f"{job_id}.json").write_bytes(b'{"id": "' + job_id.encode() + b'", "st')
    (data / "outputs" / job_id).mkdir()
    (data / "outputs" / job_id / "causes.csv").write_text("cause,n\nsepsis,3\n")
    for path in (data / "jobs" / f"{job_id}.json", data / "outputs" / job_id / "causes.csv"):
        age(path)

    result = cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    assert job_counts(result.stdout) == (0, 0, 0, 1, 0), result.output  # 1 skipped
    rows = stored_rows(dsn)
    on_disk = files_on_disk(data)
    for path in (f"jobs/{job_id}.json", f"outputs/{job_id}/causes.csv"):
        assert content_of(dsn, rows[path][0]) == on_disk[path]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
