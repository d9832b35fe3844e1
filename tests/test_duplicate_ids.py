"""Job JSONs whose names differ only in case: one job id, never written, stable run after run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.tree import scan, scan_job
from comsa_migrate.problems import Problem

from .helpers import (
    age_tree,
    job_counts,
    job_row,
    running_daemon,
    table_counts,
    wait_until,
    write_job,
)

JOB = "0a1b2c3d-0000-4000-8000-00000000abcd"
OTHER = "0a1b2c3d-0000-4000-8000-00000000ef01"

# watchdog warns, from its own thread, when it adds again the watch of a folder made with
# its parents (mkdir -p) in one go; harmless, and the daemon's CLI silences it too
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def problems_of(document: dict[str, Any], code: str) -> list[tuple[str | None, str | None]]:
    return sorted((p["job_id"], p["path"]) for p in document["problems"] if p["code"] == code)


def duplicate_tree(data: Path, upper_name: str) -> None:
    """jobs/<id>.json and another name of the same job, each with its own outputs folder."""
    write_job(data, JOB, country="Kenya")
    (data / "jobs" / upper_name).write_text(
        json.dumps({"id": JOB, "type": "openva", "status": "failed", "country": "Ghana"})
    )
    for stem, name in ((JOB, "first.csv"), (upper_name.rpartition(".")[0], "second.csv")):
        (data / "outputs" / stem).mkdir(exist_ok=True)
        (data / "outputs" / stem / name).write_text(f"written for {stem}\n")
    write_job(data, OTHER)
    age_tree(data)


@pytest.mark.parametrize(
    "other_name",
    [f"{JOB.upper()}.json", f"{JOB}.JSON", f"{JOB.upper()}.Json"],
    ids=["upper-case-id", "upper-case-suffix", "both"],
)
def test_case_only_duplicates_are_errors_and_three_backfills_write_nothing_of_the_job(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any], other_name: str
) -> None:
    duplicate_tree(data, other_name)

    runs = [cli("backfill", data, "--dsn", dsn) for _ in range(3)]

    assert [r.exit_code for r in runs] == [1, 1, 1], runs[0].output
    assert job_counts(runs[0].stdout) == (1, 0, 0, 1, 0)
    assert job_counts(runs[1].stdout) == job_counts(runs[2].stdout) == (0, 0, 1, 1, 0)
    for run in runs:
        assert "Errors (2): these jobs were not written" in run.stdout
        assert f"jobs/{JOB}.json" in run.stdout and f"jobs/{other_name}" in run.stdout
    assert table_counts(conn) == {"jobs": 1, "job_logs": 10, "job_files": 0}
    assert conn.execute("SELECT count(*) FROM jobs WHERE id = %s", [JOB]).fetchone() == (0,)


def test_the_report_agrees_with_the_backfill_on_a_duplicate(cli: Any, dsn: str, data: Path) -> None:
    duplicate_tree(data, f"{JOB.upper()}.json")
    cli("backfill", data, "--dsn", dsn)

    result = cli("report", data, "--dsn", dsn, "--format", "json")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert problems_of(document, "duplicate_job_id") == [
        (JOB, f"jobs/{JOB.upper()}.json"),
        (JOB, f"jobs/{JOB}.json"),
    ]
    assert {j["id"]: j["action"] for j in document["jobs"]} == {JOB: "skip", OTHER: "unchanged"}
    assert document["summary"]["jobs"]["by_action"]["skip"] == 1
    assert document["summary"]["problems"]["by_code"] == {"duplicate_job_id": 2}


def test_a_job_written_before_its_duplicate_appeared_is_left_as_it_was(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any]
) -> None:
    write_job(data, JOB, country="Kenya")
    assert cli("backfill", data, "--dsn", dsn).exit_code == 0
    write_job(data, JOB.upper(), {"id": JOB, "type": "openva", "status": "failed"})

    for _ in range(2):
        result = cli("backfill", data, "--dsn", dsn)
        assert result.exit_code == 1, result.output

    row = conn.execute("SELECT status, country FROM jobs WHERE id = %s", [JOB]).fetchone()
    assert row == ("completed", "Kenya")


def test_once_one_name_is_left_the_job_is_written_from_it(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any]
) -> None:
    duplicate_tree(data, f"{JOB.upper()}.json")
    assert cli("backfill", data, "--dsn", dsn).exit_code == 1

    (data / "jobs" / f"{JOB}.json").unlink()
    result = cli("backfill", data, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    row = conn.execute("SELECT status, country FROM jobs WHERE id = %s", [JOB]).fetchone()
    assert row == ("failed", "Ghana")
    files = conn.execute("SELECT file_name FROM job_files WHERE job_id = %s", [JOB]).fetchall()
    assert files == [("second.csv",)]  # from outputs/<ID>/, the folder named like the JSON
    assert "job_dir_case_mismatch 1" in " ".join(result.stdout.split())


def test_the_folders_of_duplicate_jsons_are_neither_orphans_nor_mismatched(data: Path) -> None:
    duplicate_tree(data, f"{JOB.upper()}.json")

    found = sorted((p.code, p.path) for p in scan(data) if isinstance(p, Problem))

    assert found == [
        ("duplicate_job_id", f"jobs/{JOB.upper()}.json"),
        ("duplicate_job_id", f"jobs/{JOB}.json"),
    ]


def test_a_folder_or_a_link_with_another_case_of_the_name_is_a_duplicate_too(
    data: Path, tmp_path: Path
) -> None:
    write_job(data, JOB)
    (data / "jobs" / f"{JOB.upper()}.json").mkdir()
    write_job(data, OTHER)
    (data / "jobs" / f"{OTHER.upper()}.json").symlink_to(tmp_path / "elsewhere.json")

    found = sorted((p.code, p.job_id, p.path) for p in scan(data) if isinstance(p, Problem))

    assert found == [
        ("duplicate_job_id", JOB, f"jobs/{JOB.upper()}.json"),
        ("duplicate_job_id", JOB, f"jobs/{JOB}.json"),
        ("duplicate_job_id", OTHER, f"jobs/{OTHER.upper()}.json"),
        ("duplicate_job_id", OTHER, f"jobs/{OTHER}.json"),
    ]


def test_a_job_folder_whose_name_differs_only_in_case_is_not_mirrored(
    cli: Any, dsn: str, data: Path, conn: psycopg.Connection[Any]
) -> None:
    write_job(data, JOB)
    (data / "outputs" / JOB).mkdir()
    (data / "outputs" / JOB / "causes.csv").write_text("cause,n\n")
    (data / "outputs" / JOB.upper()).mkdir()
    (data / "outputs" / JOB.upper() / "other.csv").write_text("another job's?\n")
    (data / "uploads" / JOB.upper()).mkdir()
    age_tree(data)

    first = cli("backfill", data, "--dsn", dsn)
    second = cli("backfill", data, "--dsn", dsn)

    assert (first.exit_code, second.exit_code) == (0, 0), first.output
    assert job_counts(second.stdout) == (0, 0, 1, 0, 0)
    files = conn.execute("SELECT file_name FROM job_files WHERE job_id = %s", [JOB]).fetchall()
    assert files == [("causes.csv",)]
    report = json.loads(cli("report", data, "--dsn", dsn, "--format", "json").stdout)
    assert problems_of(report, "job_dir_case_mismatch") == [
        (JOB, f"outputs/{JOB.upper()}"),
        (JOB, f"uploads/{JOB.upper()}"),
    ]
    assert "orphan_output_dir" not in report["summary"]["problems"]["by_code"]


def test_the_folder_of_an_upper_case_json_is_the_one_named_like_it(data: Path) -> None:
    write_job(data, JOB.upper(), {"type": "openva", "status": "completed"})
    (data / "outputs" / JOB.upper()).mkdir()
    (data / "outputs" / JOB.upper() / "causes.csv").write_text("cause,n\n")
    (data / "outputs" / JOB).mkdir()

    items = list(scan(data))

    [source] = [i for i in items if isinstance(i, JobSource)]
    assert [f.file_path for f in source.files] == [f"outputs/{JOB.upper()}/causes.csv"]
    assert [(p.code, p.path) for p in items if isinstance(p, Problem)] == [
        ("job_dir_case_mismatch", f"outputs/{JOB}")
    ]


def test_scan_job_looks_for_every_name_of_a_job_only_when_asked(data: Path) -> None:
    write_job(data, JOB)
    write_job(data, JOB.upper(), {"type": "openva", "status": "completed"})

    [single] = scan_job(data, JOB)
    every = scan_job(data, JOB, any_case=True)

    assert isinstance(single, JobSource)
    assert sorted((p.code, p.path) for p in every if isinstance(p, Problem)) == [
        ("duplicate_job_id", f"jobs/{JOB.upper()}.json"),
        ("duplicate_job_id", f"jobs/{JOB}.json"),
    ]
    assert len(every) == 2


# -- the daemon ------------------------------------------------------------------------------


def test_the_daemon_writes_nothing_of_a_duplicated_job_and_writes_it_once_one_is_left(
    dsn: str, data: Path
) -> None:
    write_job(data, JOB, country="Kenya")
    write_job(data, JOB.upper(), {"id": JOB, "type": "openva", "status": "failed"})
    with running_daemon(dsn, data) as daemon:
        assert job_row(dsn, JOB) is None
        write_job(data, OTHER)
        wait_until(lambda: job_row(dsn, OTHER), what="the other job")
        assert daemon.stats()["skip"] >= 1
        assert job_row(dsn, JOB) is None

        (data / "jobs" / f"{JOB.upper()}.json").unlink()

        row = wait_until(lambda: job_row(dsn, JOB), what="the job, once one JSON is left")
    assert row == (JOB, "completed", "Kenya")


def test_a_duplicate_created_while_the_daemon_runs_stops_the_job_from_changing(
    dsn: str, data: Path
) -> None:
    write_job(data, JOB, country="Kenya")
    with running_daemon(dsn, data) as daemon:
        wait_until(lambda: job_row(dsn, JOB), what="the job")
        skipped = daemon.stats().get("skip", 0)
        (data / "jobs" / f"{JOB}.JSON").write_text(
            json.dumps({"type": "openva", "status": "completed", "country": "Ghana"})
        )

        wait_until(lambda: daemon.stats().get("skip", 0) > skipped, what="the skip")
        write_job(data, JOB, country="Peru")  # an event for the job: still two names
        wait_until(lambda: daemon.stats().get("skip", 0) > skipped + 1, what="another skip")

    assert job_row(dsn, JOB) == (JOB, "completed", "Kenya")
    with psycopg.connect(dsn, autocommit=True) as conn:
        paths = conn.execute(
            "SELECT path FROM comsa_migrate.daemon_problems WHERE code = 'duplicate_job_id'"
            " ORDER BY path"
        ).fetchall()
    assert paths == [(f"jobs/{JOB}.JSON",), (f"jobs/{JOB}.json",)]
