"""restore: the file store's files back under DATA_DIR, byte for byte, atomically, never
outside it, never over a different file unless forced."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from comsa_migrate.cli import main

from .file_store_helpers import (
    dashboard_row,
    files_on_disk,
    insert_dashboard_job,
    stored_rows,
    write_sidecar,
)
from .helpers import new_job_id, running_daemon, wait_until, write_job_atomically
from .tree_store_helpers import store_file, tree_files

JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def stored_sample(sample_tree: Path, dsn: str) -> dict[str, bytes]:
    """The sample, backfilled with --file-store db: every file of its jobs in the store."""
    result = run("backfill", sample_tree, "--dsn", dsn, "-q", "--file-store", "db")
    assert result.exit_code == 0, result.output
    on_disk = files_on_disk(sample_tree)
    return {path: on_disk[path] for path in stored_rows(dsn)}


def test_restore_into_an_empty_folder_gives_back_every_file_byte_for_byte_with_its_mtime(
    sample_tree: Path, stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "pod" / "data"

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    original = tree_files(sample_tree)
    assert tree_files(target) == {path: original[path] for path in stored_sample}
    assert {p.split("/")[0] for p in stored_sample} == {"jobs", "uploads", "outputs"}
    assert len(stored_sample) == 27
    assert f"{len(stored_sample)} written, 0 replaced, 0 unchanged" in " ".join(
        result.output.split()
    )
    assert not [p for p in target.rglob(".*")], "no temporary file is left behind"


def test_a_second_restore_skips_identical_files(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    assert run("restore", tmp_path / "data", "--dsn", dsn, "-q").exit_code == 0

    result = run("restore", tmp_path / "data", "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert f"0 written, 0 replaced, {len(stored_sample)} unchanged" in " ".join(
        result.output.split()
    )


def test_a_different_file_is_left_alone_and_counted_unless_forced(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    changed = target / "outputs" / JOB / "causes.csv"
    changed.parent.mkdir(parents=True)
    changed.write_bytes(b"edited by hand\n")

    kept = run("restore", target, "--dsn", dsn, "-q")

    assert kept.exit_code == 1
    assert "1 left alone (different)" in " ".join(kept.output.split())
    assert f"file_differs  outputs/{JOB}/causes.csv" in kept.output
    assert "1 file differs from the stored content and was left alone" in kept.output
    assert changed.read_bytes() == b"edited by hand\n"

    forced = run("restore", target, "--dsn", dsn, "-q", "--force", "--job", JOB)

    assert forced.exit_code == 0, forced.output
    assert "1 replaced" in forced.output
    assert changed.read_bytes() == stored_sample[f"outputs/{JOB}/causes.csv"]


def test_a_changed_file_stored_again_comes_back_with_its_new_bytes(
    sample_tree: Path, stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    assert run("restore", target, "--dsn", dsn, "-q").exit_code == 0
    changed = sample_tree / "outputs" / JOB / "causes.csv"
    changed.write_bytes(b"rerun,causes\n")
    os.utime(changed, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    stored = run("backfill", sample_tree, "--dsn", dsn, "-q", "--file-store", "db")
    assert stored.exit_code == 0, stored.output

    fresh = run("restore", tmp_path / "fresh" / "data", "--dsn", dsn, "-q")
    again = run("restore", target, "--dsn", dsn, "-q", "--force")

    assert fresh.exit_code == again.exit_code == 0, fresh.output + again.output
    for data in (tmp_path / "fresh" / "data", target):
        assert (data / "outputs" / JOB / "causes.csv").read_bytes() == b"rerun,causes\n"
        assert (data / "outputs" / JOB / "causes.csv").stat().st_mtime_ns == 1_700 * 10**15
    assert "1 replaced" in again.output


def test_a_file_no_longer_on_disk_is_restored_with_its_last_content(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE comsa_migrate.stored_files SET on_disk = false")

    result = run("restore", tmp_path / "data", "--dsn", dsn, "-q", "--job", JOB)

    assert result.exit_code == 0, result.output
    assert sorted(tree_files(tmp_path / "data")) == sorted(p for p in stored_sample if JOB in p)


def test_missing_or_corrupt_content_is_not_written_and_the_run_goes_on(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    missing = hashlib.sha256(stored_sample[f"outputs/{JOB}/causes.csv"]).hexdigest()
    corrupt = hashlib.sha256(stored_sample[f"jobs/{JOB}.json"]).hexdigest()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s", [missing])
        conn.execute(
            "UPDATE comsa_migrate.file_chunks SET data = 'x'::bytea || data WHERE sha256 = %s",
            [corrupt],
        )
    target = tmp_path / "data"

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 1
    assert f"stored_content_missing  outputs/{JOB}/causes.csv" in result.output
    assert f"stored_content_corrupt  jobs/{JOB}.json" in result.output
    assert not (target / "jobs" / f"{JOB}.json").exists()
    assert not (target / "outputs" / JOB / "causes.csv").exists()
    assert (target / "outputs" / JOB / "calibration_summary.csv").exists()
    assert not [p for p in target.rglob(".*")], "the refused content's temporary file is gone"


@pytest.mark.parametrize(
    "path",
    [
        "../escaped.csv",
        f"outputs/{JOB}/../../../escaped.csv",
        "/tmp/escaped.csv",
        f"outputs/{JOB}//x.csv",
        "elsewhere/x.csv",
        "outputs/85416700-d8f9-46d4-8f3f-ca9546389325/not-its-job.csv",
        f"uploads/{JOB}",  # a file where the job's folder belongs
        f"outputs/{JOB}",
        f"jobs/{JOB}.csv",
        f"jobs/{JOB}",
    ],
)
def test_a_stored_path_that_leaves_data_dir_is_refused(dsn: str, tmp_path: Path, path: str) -> None:
    store_file(dsn, JOB, path, b"evil", 0)
    target = tmp_path / "deep" / "data"

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 1
    assert "unsafe_path" in result.output
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_symbolic_link_inside_data_dir_is_not_followed(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "outputs").mkdir(parents=True)
    os.symlink(outside, target / "outputs" / JOB)
    (target / "jobs").mkdir()
    os.symlink(outside / "job.json", target / "jobs" / f"{JOB}.json")

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 1
    assert f"unsafe_path  outputs/{JOB}/causes.csv" in result.output
    assert f"unsafe_path  jobs/{JOB}.json" in result.output
    assert list(outside.iterdir()) == []
    assert (target / "outputs" / "79dfae28-16c5-41d0-b3c2-11766651a92c" / "causes.csv").exists()


def test_restore_of_a_database_without_a_file_store_says_so(empty_dsn: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["restore", str(tmp_path), "--dsn", empty_dsn])

    assert result.exit_code == 2
    assert "has no file store" in result.output


def test_restore_help_teaches_with_an_example() -> None:
    result = run("restore", "--help")

    assert result.exit_code == 0
    assert "comsa-migrate restore /app/data" in result.output
    assert "--file-store URL" in result.output


@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_the_pods_own_job_kept_by_the_daemon_comes_back_after_data_is_wiped(
    dsn: str, data: Path
) -> None:
    job_id = new_job_id()
    insert_dashboard_job(dsn, job_id)  # a row as the dashboard inserts it, no job JSON
    row = dashboard_row(dsn, job_id)
    with running_daemon(dsn, data, file_store="db"):  # beside the dashboard, on its data/
        sidecar = write_sidecar(data, job_id).read_bytes()
        (data / "outputs" / job_id).mkdir()
        (data / "outputs" / job_id / "causes.csv").write_bytes(b"cause,n\nsepsis,3\n")
        (data / "outputs" / job_id / "plot.png").write_bytes(bytes(range(256)) * 4096)
        wait_until(
            lambda: (
                {f"outputs/{job_id}/plot.png", f"jobs/{job_id}.json"} <= set(stored_rows(dsn))
                and f"outputs/{job_id}/causes.csv" in stored_rows(dsn)
            ),
            what="the outputs and the sidecar kept",
        )
    kept = tree_files(data)
    shutil.rmtree(data)  # the next deploy: a fresh pod, data/ empty

    result = run("restore", data, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert tree_files(data) == kept
    assert (data / "jobs" / f"{job_id}.json").read_bytes() == sidecar
    assert (data / "outputs" / job_id / "plot.png").read_bytes() == bytes(range(256)) * 4096
    assert dashboard_row(dsn, job_id) == row


def test_restore_through_s3_gives_back_every_file_byte_for_byte(
    sample_tree: Path, dsn: str, tmp_path: Path, s3_env: Any
) -> None:
    bucket = f"comsa-{uuid.uuid4().hex[:12]}"
    s3_env.create_bucket(bucket)
    url = f"s3://{bucket}/comsa/files"
    stored = run("backfill", sample_tree, "--dsn", dsn, "-q", "--file-store", url)
    assert stored.exit_code == 0, stored.output
    target = tmp_path / "pod" / "data"

    result = run("restore", target, "--dsn", dsn, "-q", "--file-store", url)

    assert result.exit_code == 0, result.output
    original = tree_files(sample_tree)
    assert tree_files(target) == {path: original[path] for path in stored_rows(dsn)}
    assert len(stored_rows(dsn)) == 27
    exported = run("export", tmp_path / "export" / "data", "--dsn", dsn, "-q", "--file-store", url)
    assert exported.exit_code == 0, exported.output
    assert tree_files(tmp_path / "export" / "data") == tree_files(target)


def test_with_missing_ok_a_lost_content_is_a_warning_and_the_pod_starts(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    missing = hashlib.sha256(stored_sample[f"outputs/{JOB}/causes.csv"]).hexdigest()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s", [missing])
    target = tmp_path / "data"

    result = run("restore", target, "--dsn", dsn, "-q", "--missing-ok")

    assert result.exit_code == 0, result.output
    shared = sum(
        content == stored_sample[f"outputs/{JOB}/causes.csv"] for content in stored_sample.values()
    )
    words = " ".join(result.output.split())
    assert f"warnings stored_content_missing {shared}" in words  # each file of that content
    assert f"{JOB}  outputs/{JOB}/causes.csv" in result.output
    assert "Errors" not in result.output
    assert not (target / "outputs" / JOB / "causes.csv").exists()
    assert (target / "outputs" / JOB / "calibration_summary.csv").exists()


def test_with_missing_ok_another_failure_still_exits_1(
    stored_sample: dict[str, bytes], dsn: str, tmp_path: Path
) -> None:
    missing = hashlib.sha256(stored_sample[f"outputs/{JOB}/causes.csv"]).hexdigest()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s", [missing])
    changed = tmp_path / "data" / "jobs" / f"{JOB}.json"
    changed.parent.mkdir(parents=True)
    changed.write_bytes(b"{}\n")

    result = run("restore", tmp_path / "data", "--dsn", dsn, "-q", "--missing-ok")

    assert result.exit_code == 1
    assert "1 left alone (different)" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "name",
    [
        "a" * 251 + ".csv",  # 255 bytes, the longest name Linux takes
        "死因" * 40 + ".csv",  # 244 bytes of UTF-8
        "back\\slash.csv",  # a plain character on Linux, stored as the backfill read it
    ],
    ids=["255-bytes", "long-utf8", "backslash"],
)
def test_a_file_of_any_name_the_backfill_stored_comes_back(
    dsn: str, data: Path, tmp_path: Path, name: str
) -> None:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    (data / "outputs" / job_id / name).write_bytes(b"cause,n\n")
    assert run("backfill", data, "--dsn", dsn, "-q", "--file-store", "db").exit_code == 0
    target = tmp_path / "restored" / "data"

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert (target / "outputs" / job_id / name).read_bytes() == b"cause,n\n"
    assert not [p for p in target.rglob(".*")], "no temporary file is left"


def test_a_job_json_renamed_by_case_comes_back_once_under_its_name_on_disk(
    dsn: str, data: Path, tmp_path: Path
) -> None:
    """Stored as jobs/<ID>.json, then rewritten as jobs/<id>.json: the old name's row stays
    (no longer on disk), and both back would be a duplicate_job_id to the next backfill."""
    job_id = new_job_id()
    capitals = write_job_atomically(data, job_id).rename(data / "jobs" / f"{job_id.upper()}.json")
    assert run("backfill", data, "--dsn", dsn, "-q", "--file-store", "db").exit_code == 0
    capitals.rename(data / "jobs" / f"{job_id}.json")
    assert run("backfill", data, "--dsn", dsn, "-q", "--file-store", "db").exit_code == 0
    target = tmp_path / "restored" / "data"

    result = run("restore", target, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert sorted(p for p in tree_files(target) if p.startswith("jobs/")) == [f"jobs/{job_id}.json"]
