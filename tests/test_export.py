"""export: the database's jobs as the legacy tree, and the round trips through it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from bench.generate import TreeShape, generate
from comsa_migrate.cli import main
from comsa_migrate.db.migrations import create_input_files_table

from .conftest import Databases, fresh_database
from .helpers import edit_job_json, write_job
from .tree_store_helpers import table_rows, tree_files

JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"
FAILED = "85416700-d8f9-46d4-8f3f-ca9546389325"


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def other_dsn(databases: Databases, template_db: str) -> Iterator[str]:
    """A second fresh database, for the backfill of an exported tree."""
    with fresh_database(databases, template_db) as made:
        yield made


def backfilled(tree: Path, dsn: str) -> None:
    result = run("backfill", tree, "--dsn", dsn, "-q", "--file-store", "db")
    assert result.exit_code in (0, 1), result.output  # the quirks skip their broken jobs


def exported(dsn: str, target: Path, *args: Any) -> Result:
    result = run("export", target, "--dsn", dsn, "-q", *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("tree", ["sample", "quirks", "generated"])
def test_backfill_export_and_backfill_again_give_every_table_row_for_row(
    tree: str,
    sample_tree: Path,
    quirks_tree: Path,
    dsn: str,
    other_dsn: str,
    tmp_path: Path,
) -> None:
    source = {
        "sample": sample_tree,
        "quirks": quirks_tree,
        "generated": tmp_path / "generated" / "data",
    }[tree]
    if tree == "generated":
        generate(source, TreeShape(jobs=60, seed=11, upload_share=0.3))
    backfilled(source, dsn)
    target = tmp_path / "export" / "data"

    exported(dsn, target)
    backfilled(target, other_dsn)

    before, after = table_rows(dsn), table_rows(other_dsn)
    assert before["jobs"], "the tree has jobs"
    for table in before:
        assert after[table] == before[table], table


def test_an_unchanged_migrated_job_is_its_original_json_byte_for_byte(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)

    exported(dsn, tmp_path / "data")

    original, export = tree_files(sample_tree), tree_files(tmp_path / "data")
    jobs = [path for path in export if path.startswith("jobs/")]
    assert len(jobs) == 11
    assert {path: export[path] for path in jobs} == {path: original[path] for path in jobs}
    assert all(export[path] == original[path] for path in export)


def test_a_job_failed_at_the_dashboards_start_up_and_logged_since_comes_back_changed(
    sample_tree: Path, dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = 'running', error = '{}' WHERE id = %s", [JOB])
        conn.execute(  # the dashboard's cleanup_orphaned_jobs() at its start-up
            "UPDATE jobs SET status = 'failed', completed_at = NOW(),"
            ' error = \'{"message": "Job interrupted by server restart"}\'::jsonb'
            " WHERE status = 'running'"
        )
        conn.execute(  # its add_log()
            "INSERT INTO job_logs (job_id, message, timestamp) VALUES (%s, %s, NOW())",
            [JOB, "Rerun requested"],
        )
        (completed_at,) = conn.execute(
            "SELECT completed_at FROM jobs WHERE id = %s", [JOB]
        ).fetchone()  # type: ignore[misc]

    exported(dsn, tmp_path / "data")

    doc = orjson_loads(tmp_path / "data" / "jobs" / f"{JOB}.json")
    assert doc["status"] == "failed"
    assert doc["error"] == "Job interrupted by server restart"
    assert doc["log"][-1] == f"[{completed_at:%Y-%m-%d %H:%M:%S}] Rerun requested"
    assert doc["result"]["n_records"] == 81  # the fields the row kept are as they were
    assert list(doc)[:4] == ["id", "type", "status", "algorithm"]
    backfilled(tmp_path / "data", other_dsn)
    before, after = table_rows(dsn), table_rows(other_dsn)
    assert after["jobs"] == before["jobs"]
    assert after["job_files"] == before["job_files"]
    assert len(after["job_logs"]) == len(before["job_logs"])


def orjson_loads(path: Path) -> Any:
    import orjson

    return orjson.loads(path.read_bytes())


def test_a_dry_run_lists_what_would_be_written_and_writes_nothing(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)

    result = run("export", tmp_path / "data", "--dsn", dsn, "-q", "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"to write    jobs/{JOB}.json" in result.output
    assert f"to write    outputs/{JOB}/causes.csv" in result.output
    assert "27 to write" in " ".join(result.output.split())
    assert not (tmp_path / "data").exists()


def test_a_legacy_file_changed_since_is_left_alone_unless_forced(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)
    exported(dsn, tmp_path / "data")
    edited = tmp_path / "data" / "jobs" / f"{FAILED}.json"
    edited.write_bytes(b'{"edited": true}\n')

    again = run("export", tmp_path / "data", "--dsn", dsn, "-q")
    dry = run("export", tmp_path / "data", "--dsn", dsn, "-q", "--dry-run")
    forced = run("export", tmp_path / "data", "--dsn", dsn, "-q", "--force")

    assert again.exit_code == 1
    assert "26 unchanged, 1 left alone (different)" in " ".join(again.output.split())
    assert f"skip        jobs/{FAILED}.json  (file_differs)" in dry.output
    assert forced.exit_code == 0, forced.output
    assert edited.read_bytes() == (sample_tree / "jobs" / f"{FAILED}.json").read_bytes()


def test_only_the_jobs_named_or_touched_since_a_time_are_exported(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)

    named = run("export", tmp_path / "named" / "data", "--dsn", dsn, "-q", "--job", FAILED)
    since = run(
        "export",
        tmp_path / "since" / "data",
        "--dsn",
        dsn,
        "-q",
        "--since",
        "2026-01-01T20:04:00+00:00",
    )

    assert named.exit_code == since.exit_code == 0
    assert sorted(tree_files(tmp_path / "named" / "data")) == [f"jobs/{FAILED}.json"]
    assert sorted(p for p in tree_files(tmp_path / "since" / "data") if p.startswith("jobs/")) == [
        f"jobs/{FAILED}.json",
        "jobs/ef3bd2ad-ce16-45fc-bc09-6be28646ecbf.json",
    ]


def test_export_help_teaches_with_an_example_and_a_bad_job_id_is_refused() -> None:
    assert "comsa-migrate export /srv/comsa/backend/data" in run("export", "--help").output
    refused = CliRunner().invoke(main, ["export", "/tmp/x", "--job", "nope", "--dsn", "x=y"])
    assert refused.exit_code == 2


def test_the_rollback_into_the_legacy_tree_replaces_the_json_of_a_job_the_dashboard_changed(
    sample_tree: Path, dsn: str
) -> None:
    backfilled(sample_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(  # the dashboard's add_log() since the cut-over
            "INSERT INTO job_logs (job_id, message, timestamp) VALUES (%s, %s, NOW())",
            [JOB, "Rerun requested"],
        )
    edited = sample_tree / "jobs" / f"{FAILED}.json"
    edited.write_bytes(b'{"edited": true}\n')  # differs from the stored original and the row's

    result = run("export", sample_tree, "--dsn", dsn, "-q")

    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert "1 replaced, 25 unchanged, 1 left alone (different)" in words
    assert f"file_differs  jobs/{FAILED}.json" in result.output
    assert orjson_loads(sample_tree / "jobs" / f"{JOB}.json")["log"][-1].endswith("Rerun requested")
    assert edited.read_bytes() == b'{"edited": true}\n'


def test_a_rebuilt_json_gets_the_time_of_writing_not_the_originals(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a change of the same length: the rebuilt JSON has the original's size
        conn.execute("UPDATE jobs SET country = 'Mozambiqux' WHERE id = %s", [JOB])
        size, mtime_ns = conn.execute(
            "SELECT size, mtime_ns FROM comsa_migrate.stored_files WHERE path = %s",
            [f"jobs/{JOB}.json"],
        ).fetchone()  # type: ignore[misc]

    exported(dsn, tmp_path / "data")

    rebuilt = (tmp_path / "data" / "jobs" / f"{JOB}.json").stat()
    assert orjson_loads(tmp_path / "data" / "jobs" / f"{JOB}.json")["country"] == "Mozambiqux"
    assert rebuilt.st_size == size
    # so a sync --file-store, which skips a file of the stored size and mtime, stores it
    assert rebuilt.st_mtime_ns != mtime_ns
    unchanged = tmp_path / "data" / "jobs" / f"{FAILED}.json"
    assert (
        unchanged.stat().st_mtime_ns == (sample_tree / "jobs" / f"{FAILED}.json").stat().st_mtime_ns
    )


def test_a_migrated_job_whose_original_was_never_stored_is_rebuilt_with_a_warning(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    backfilled(sample_tree, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM comsa_migrate.stored_files WHERE path = %s", [f"jobs/{JOB}.json"])

    result = exported(dsn, tmp_path / "data")

    assert "original_not_stored 1" in " ".join(result.output.split())
    assert f"{JOB}  jobs/{JOB}.json" in result.output
    assert orjson_loads(tmp_path / "data" / "jobs" / f"{JOB}.json")["id"] == JOB


def test_since_with_an_offset_is_taken_in_the_servers_time_zone_as_the_dashboards_now(
    dsn: str, tmp_path: Path
) -> None:
    """On a server whose TimeZone is Europe/Paris, the dashboard's NOW() records a job made at
    09:00 UTC as 10:00: --since 09:30 UTC (10:30 there) leaves it out, 08:30 UTC takes it."""
    job = "0b0c0d0e-0000-4000-8000-0000000000aa"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, type, status, algorithm, created_at)"
            " VALUES (%s, 'pipeline', 'pending', 'InSilicoVA', '2026-02-01 10:00:00')",
            [job],
        )
    paris = f"{dsn} options='-c TimeZone=Europe/Paris'"

    def exported_since(since: str) -> list[str]:
        folder = tmp_path / since.replace(":", "") / "data"
        result = run("export", folder, "--dsn", paris, "-q", "--since", since)
        assert result.exit_code in (0, 1), result.output
        return sorted(p for p in tree_files(folder) if p.startswith("jobs/"))

    assert exported_since("2026-02-01T08:30:00+00:00") == [f"jobs/{job}.json"]
    assert exported_since("2026-02-01T09:30:00+00:00") == []


NUMBERS = "22222222-0000-4000-8000-000000000001"
NO_CREATED_AT = "88888888-0000-4000-8000-000000000001"
UPLOADS_NESTED, UPLOADS_CAPITALS, REMOVED, RENAMED = (
    f"3c4d5e6f-0000-4000-8000-00000000000{n}" for n in range(1, 5)
)


def test_a_job_whose_result_has_numbers_jsonb_writes_otherwise_is_still_its_original(
    data: Path, dsn: str
) -> None:
    """jsonb keeps 1.2346e+23 as 123460000000000000000000 and 1e300 as its 301 digits: the
    same numbers, so the job is unchanged, and the rollback leaves its file alone."""
    original = (
        f'{{"id":"{NUMBERS}","type":"openva","status":"completed","algorithm":"InterVA",'
        '"created_at":"2026-01-02 10:00:00","error":{},'
        '"result":{"total_deaths":1.2346e+23,"big":1e300,"small":1e-7,"z":[1.5,2]},'
        '"log":["[2026-01-02 10:00:01] start"]}\n'
    ).encode()
    (data / "jobs" / f"{NUMBERS}.json").write_bytes(original)
    backfilled(data, dsn)

    result = run("export", data, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert "1 unchanged" in " ".join(result.output.split())
    assert (data / "jobs" / f"{NUMBERS}.json").read_bytes() == original


def test_a_job_that_had_no_created_at_keeps_its_time_when_its_json_is_rebuilt(
    data: Path, dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    """The backfill took the JSON's mtime; the rebuilt JSON has a new mtime, so it carries
    the time itself."""
    path = data / "jobs" / f"{NO_CREATED_AT}.json"
    path.write_text(
        f'{{"id":"{NO_CREATED_AT}","type":"openva","status":"running","algorithm":"InterVA",'
        '"error":{},"result":{},"log":[]}\n'
    )
    os.utime(path, (1767137442, 1767137442))  # 2025-12-30 23:30:42 UTC
    backfilled(data, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [NO_CREATED_AT])

    exported(dsn, tmp_path / "data")
    backfilled(tmp_path / "data", other_dsn)

    assert orjson_loads(tmp_path / "data" / "jobs" / f"{NO_CREATED_AT}.json")["created_at"] == (
        "2025-12-30 23:30:42"
    )
    assert table_rows(other_dsn)["jobs"] == table_rows(dsn)["jobs"]


def with_input_files(*dsns: str) -> None:
    """The dashboard's job_input_files, as its later migrations make it."""
    for one in dsns:
        with psycopg.connect(one, autocommit=True) as conn:
            create_input_files_table(conn)


def test_uploads_in_a_subfolder_or_a_folder_named_in_capitals_are_exported_once(
    data: Path, dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    """job_input_files holds an upload by its base name; the file store holds it at its path:
    the export writes it there alone, not a second copy at uploads/<id>/<name>."""
    with_input_files(dsn, other_dsn)
    write_job(data, UPLOADS_NESTED)
    nested = data / "uploads" / UPLOADS_NESTED / "sub dir" / "nested"
    nested.mkdir(parents=True)
    (nested / "deep.csv").write_text("a,b\n1,2\n")
    write_job(data, UPLOADS_CAPITALS)
    capitals = data / "uploads" / UPLOADS_CAPITALS.upper()
    capitals.mkdir()
    (capitals / "input.csv").write_text("c,d\n3,4\n")
    backfilled(data, dsn)

    exported(dsn, tmp_path / "data")

    uploads = sorted(p for p in tree_files(tmp_path / "data") if p.startswith("uploads/"))
    assert uploads == sorted(
        [
            f"uploads/{UPLOADS_NESTED}/sub dir/nested/deep.csv",
            f"uploads/{UPLOADS_CAPITALS.upper()}/input.csv",
        ]
    )
    backfilled(tmp_path / "data", other_dsn)
    assert table_rows(other_dsn) == table_rows(dsn)


def test_a_file_removed_from_disk_since_it_was_stored_is_not_exported(
    data: Path, dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    """Its row is gone from job_files: the database's job no longer has it (restore, which
    puts a wiped tree back, brings it back; export writes the database's jobs)."""
    write_job(data, REMOVED)
    outputs = data / "outputs" / REMOVED
    outputs.mkdir()
    (outputs / "causes.csv").write_text("cause,n\n")
    (outputs / "plot.png").write_bytes(b"\x89PNG")
    backfilled(data, dsn)
    (outputs / "plot.png").unlink()
    backfilled(data, dsn)

    exported(dsn, tmp_path / "data")

    assert sorted(p for p in tree_files(tmp_path / "data") if p.startswith("outputs/")) == [
        f"outputs/{REMOVED}/causes.csv"
    ]
    backfilled(tmp_path / "data", other_dsn)
    assert table_rows(other_dsn) == table_rows(dsn)


def test_a_job_json_renamed_by_case_is_exported_under_its_name_on_disk(
    data: Path, dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    """Stored as jobs/<ID>.json, then rewritten by the legacy backend as jobs/<id>.json: the
    export writes the one on disk, not both, nor the old name."""
    capitals = write_job(data, RENAMED, id=RENAMED).rename(
        data / "jobs" / f"{RENAMED.upper()}.json"
    )
    backfilled(data, dsn)
    capitals.rename(data / "jobs" / f"{RENAMED}.json")
    edit_job_json(data, RENAMED, status="failed")
    backfilled(data, dsn)

    exported(dsn, tmp_path / "data")

    jobs = sorted(p for p in tree_files(tmp_path / "data") if p.startswith("jobs/"))
    assert jobs == [f"jobs/{RENAMED}.json"]
    assert orjson_loads(tmp_path / "data" / jobs[0])["status"] == "failed"
    backfilled(tmp_path / "data", other_dsn)
    assert table_rows(other_dsn) == table_rows(dsn)


def test_an_output_of_the_longest_name_linux_takes_is_exported(
    data: Path, dsn: str, tmp_path: Path
) -> None:
    job_id = UPLOADS_NESTED
    write_job(data, job_id)
    (data / "outputs" / job_id).mkdir()
    name = "a" * 251 + ".csv"  # 255 bytes: its temporary name cannot carry it
    (data / "outputs" / job_id / name).write_bytes(b"cause,n\n")
    backfilled(data, dsn)

    exported(dsn, tmp_path / "data")

    assert (tmp_path / "data" / "outputs" / job_id / name).read_bytes() == b"cause,n\n"


def test_an_output_job_files_names_is_exported_though_its_file_is_off_disk(
    sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    """The dashboard serves what job_files names: its stored content comes back even when
    the file was gone from disk at the last sync (the rows of the dashboard's own jobs are
    its own, and stay)."""
    backfilled(sample_tree, dsn)
    path = f"outputs/{JOB}/causes.csv"
    with psycopg.connect(dsn, autocommit=True) as conn:
        off_disk = "UPDATE comsa_migrate.stored_files SET on_disk = false WHERE path = %s"
        conn.execute(off_disk, [path])

    exported(dsn, tmp_path / "data")

    assert (tmp_path / "data" / path).read_bytes() == (sample_tree / path).read_bytes()
