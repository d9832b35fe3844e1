"""Every problem code, end to end: a tree that holds each one, backfilled through the CLI."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from comsa_migrate.problems import CODES, Severity

from .helpers import job_counts

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

#: the codes the issue names, with their severities
ISSUE_CODES = {
    "invalid_json": ERROR,
    "not_an_object": ERROR,
    "invalid_job_id": ERROR,
    "id_mismatch": ERROR,
    "missing_field": ERROR,
    "invalid_status": ERROR,
    "invalid_timestamp": ERROR,
    "invalid_field": ERROR,
    "file_too_large": ERROR,
    "unreadable": ERROR,
    "conflict": ERROR,
    "missing_id": WARNING,
    "created_at_from_mtime": WARNING,
    "input_path_outside_root": WARNING,
    "missing_input_file": WARNING,
    "symlink_skipped": WARNING,
    "orphan_upload_dir": WARNING,
    "orphan_output_dir": WARNING,
    "invalid_job_dir": WARNING,
    "algorithm_list_truncated": INFO,
    "unmapped_fields": INFO,
    "metadata_only": INFO,
    "stray_file": INFO,
}
#: a job the database refuses (tests/test_backfill.py)
DB_ERROR = {"db_error": ERROR}
#: names and kinds of file that no job store should hold (tests/test_hostile_names.py,
#: tests/test_file_types.py, tests/test_duplicate_ids.py)
HOSTILE_TREE_CODES = {
    "not_a_file": ERROR,
    "duplicate_job_id": ERROR,
    "job_dir_case_mismatch": WARNING,
    "invalid_file_name": WARNING,
    "special_file_skipped": WARNING,
}
#: a bug while reading one job (tests/test_honest_runs.py)
BUG = {"internal_error": ERROR}
#: uploads copied into the dashboard's job_input_files (tests/test_dashboard_client.py)
UPLOAD_CODES = {"input_too_large": WARNING, "duplicate_input_name": WARNING}
#: the report's drift check between the tree and the database (its own tests)
REPORT_CODES = {
    "schema_missing": ERROR,
    "db_only": WARNING,
    "db_changed": WARNING,
    "file_missing": WARNING,
    "size_mismatch": WARNING,
}
#: what restore and export find while writing a tree (tests/test_restore.py,
#: tests/test_export.py)
TREE_WRITING_CODES = {
    "stored_content_missing": ERROR,
    "stored_content_corrupt": ERROR,
    "file_differs": ERROR,
    "unsafe_path": ERROR,
    "write_failed": ERROR,
    "store_read_failed": ERROR,
    "job_json_failed": ERROR,
    "input_not_base64": ERROR,
    "input_unreadable": ERROR,
    "output_not_stored": WARNING,
    "original_unreadable": WARNING,
    "original_not_stored": WARNING,
}
#: what the report's check of a file store finds besides stored_content_missing and
#: stored_content_corrupt (tests/test_file_store_report.py)
STORE_CHECK_CODES = {"changed_since_stored": WARNING, "removed_since_stored": INFO}
#: codes a backfill cannot be made to produce from a tree alone (the upload codes need
#: the dashboard's job_input_files in the database)
NOT_FROM_A_TREE = {"conflict", "db_error", *BUG, *UPLOAD_CODES}


def test_codes_are_the_issues_plus_db_error_and_the_reports_with_their_severities() -> None:
    assert {code: severity for code, (severity, _) in CODES.items()} == {
        **ISSUE_CODES,
        **DB_ERROR,
        **HOSTILE_TREE_CODES,
        **BUG,
        **UPLOAD_CODES,
        **REPORT_CODES,
        **TREE_WRITING_CODES,
        **STORE_CHECK_CODES,
    }


def test_every_code_has_a_one_line_meaning() -> None:
    for code, (_, meaning) in CODES.items():
        assert meaning.strip() and "\n" not in meaning, code


def job_id(n: int) -> str:
    return f"0a1b2c3d-0000-4000-8000-{n:012d}"


QUIRK = {n: job_id(n) for n in range(1, 10)}
NOT_AN_OBJECT, BAD_ID, NO_TYPE, BAD_TIME, TOO_LONG, TOO_LARGE, DEEP, NO_INPUT, ORPHAN = (
    job_id(n) for n in range(10, 19)
)
DUPLICATE, FOLDER_AS_JSON = job_id(19), job_id(20)
MAX_JSON_BYTES = 4096


def write_json(data_dir: Path, name: str, doc: Any) -> None:
    """Write ``doc``, any JSON value, as jobs/<name>.json."""
    (data_dir / "jobs" / f"{name}.json").write_bytes(orjson.dumps(doc))


def nest_beyond_path_max(folder: Path) -> None:
    """Folders nested until their path is longer than the OS allows: reading them fails."""
    name = "d" * 255
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(4096 // len(name) + 2):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


@pytest.fixture
def every_code_tree(quirks_tree: Path) -> Path:
    """fixtures/quirks plus one job for each code that the fixture does not hold.

    Tests may run as root, who reads every file whatever its mode, so `unreadable` comes
    from a folder whose path the OS refuses as too long (tests/test_tree.py pins
    permission errors on a fake file system).
    """
    data_dir = quirks_tree

    def add(job: str, **fields: Any) -> None:
        doc = {"id": job, "type": "openva", "status": "completed"}
        doc["created_at"] = "2026-01-07 10:00:00"
        write_json(data_dir, job, {**doc, **fields})

    write_json(data_dir, NOT_AN_OBJECT, [{"type": "openva", "status": "completed"}])
    add(BAD_ID, id="job-11")
    add(NO_TYPE, type=None)
    add(BAD_TIME, started_at="yesterday")
    add(TOO_LONG, country="x" * 101)
    add(TOO_LARGE, log=["[2026-01-07 10:00:00] line"] * 200)
    add(DEEP)
    (data_dir / "outputs" / DEEP).mkdir()
    nest_beyond_path_max(data_dir / "outputs" / DEEP)
    add(NO_INPUT, input_file=f"data/uploads/{NO_INPUT}/input.csv")
    (data_dir / "outputs" / ORPHAN).mkdir()
    (data_dir / "outputs" / ORPHAN / "causes.csv").write_text("cause,n\n")
    add(DUPLICATE)
    write_json(data_dir, DUPLICATE.upper(), {"type": "openva", "status": "failed"})
    (data_dir / "jobs" / f"{FOLDER_AS_JSON}.json").mkdir()
    outputs = data_dir / "outputs" / NO_INPUT
    outputs.mkdir()
    with open(os.path.join(os.fsencode(outputs), b"caf\xe9.csv"), "wb") as fh:
        fh.write(b"cause,n\n")
    os.mkfifo(outputs / "pipe")
    (data_dir / "outputs" / NO_INPUT.upper()).mkdir()
    return data_dir


#: (code, job id, file) of every job that must not be written
EXPECTED_ERRORS = sorted(
    [
        ("invalid_json", QUIRK[3], f"jobs/{QUIRK[3]}.json"),
        ("id_mismatch", QUIRK[5], f"jobs/{QUIRK[5]}.json"),
        ("invalid_status", QUIRK[6], f"jobs/{QUIRK[6]}.json"),
        ("not_an_object", NOT_AN_OBJECT, f"jobs/{NOT_AN_OBJECT}.json"),
        ("invalid_job_id", BAD_ID, f"jobs/{BAD_ID}.json"),
        ("missing_field", NO_TYPE, f"jobs/{NO_TYPE}.json"),
        ("invalid_timestamp", BAD_TIME, f"jobs/{BAD_TIME}.json"),
        ("invalid_field", TOO_LONG, f"jobs/{TOO_LONG}.json"),
        ("file_too_large", TOO_LARGE, f"jobs/{TOO_LARGE}.json"),
        ("unreadable", DEEP, f"outputs/{DEEP}"),
        ("duplicate_job_id", DUPLICATE, f"jobs/{DUPLICATE.upper()}.json"),
        ("duplicate_job_id", DUPLICATE, f"jobs/{DUPLICATE}.json"),
        ("not_a_file", FOLDER_AS_JSON, f"jobs/{FOLDER_AS_JSON}.json"),
    ]
)
EXPECTED_WARNINGS = {
    "missing_id": 1,  # quirk 2
    "created_at_from_mtime": 1,  # quirk 2
    "input_path_outside_root": 1,  # quirk 7
    "missing_input_file": 1,
    "symlink_skipped": 1,  # quirk 1's latest.csv
    "orphan_upload_dir": 1,  # quirk 9
    "orphan_output_dir": 1,
    "invalid_job_dir": 2,  # jobs/backup.json, outputs/scratch
    "job_dir_case_mismatch": 1,
    "invalid_file_name": 1,
    "special_file_skipped": 1,
}
EXPECTED_INFO = {
    "algorithm_list_truncated": 1,  # quirk 1
    "unmapped_fields": 1,  # quirk 1's demo_id
    "metadata_only": 1,  # quirk 4
    "stray_file": 1,  # jobs/notes.txt
}
WRITTEN = sorted([QUIRK[1], QUIRK[2], QUIRK[7], QUIRK[8], NO_INPUT])


def summary_row(stdout: str, label: str) -> dict[str, int]:
    """The "code n, code n" counts of one labelled row of the summary (wrapped or not)."""
    match = re.search(rf"^  {label} +(.*(?:\n {{14}}\S.*)*)", stdout, re.M)
    assert match is not None, stdout
    text = " ".join(match.group(1).split())
    if text == "none":
        return {}
    pairs = (item.rsplit(" ", 1) for item in text.split(", "))
    return {code: int(n) for code, n in pairs}


def listed_errors(stdout: str) -> list[tuple[str, str, str, str]]:
    """(code, job id, file, reason) of each error listed after the "Errors (n)" line."""
    _, header, block = stdout.partition("\nErrors (")
    assert header, stdout
    entries = re.split(r"^  (?=[a-z_]+  )", block.split("\n", 1)[1], flags=re.M)
    listed = []
    for entry in filter(None, entries):
        code, job, path, *reason = entry.split()
        listed.append((code, job, path, " ".join(reason)))
    return listed


def test_every_code_but_conflict_and_db_error_comes_from_a_tree(
    cli: Any, dsn: str, every_code_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    result = cli("backfill", every_code_tree, "--dsn", dsn, "--max-json-bytes", str(MAX_JSON_BYTES))

    assert result.exit_code == 1, result.output
    errors = listed_errors(result.stdout)
    produced = {
        *summary_row(result.stdout, "warnings"),
        *summary_row(result.stdout, "info"),
        *(code for code, *_ in errors),
    }
    from_elsewhere = {*REPORT_CODES, *TREE_WRITING_CODES, *STORE_CHECK_CODES}
    assert produced == set(CODES) - NOT_FROM_A_TREE - from_elsewhere


def test_error_jobs_are_listed_with_id_file_and_reason_and_left_out_of_the_database(
    cli: Any, dsn: str, every_code_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    result = cli("backfill", every_code_tree, "--dsn", dsn, "--max-json-bytes", str(MAX_JSON_BYTES))

    assert result.exit_code == 1, result.output
    assert f"Errors ({len(EXPECTED_ERRORS)}): these jobs were not written" in result.stdout
    errors = listed_errors(result.stdout)
    assert [(code, job, path) for code, job, path, _ in errors] == EXPECTED_ERRORS
    reasons = {code: reason for code, _, _, reason in errors}
    assert "over the limit of 4,096" in reasons["file_too_large"]
    assert "country" in reasons["invalid_field"]
    assert "started_at" in reasons["invalid_timestamp"]
    assert "type" in reasons["missing_field"]
    assert "done" in reasons["invalid_status"]
    assert "too long" in reasons["unreadable"]
    assert all(reason for reason in reasons.values())
    stored = conn.execute("SELECT id::text FROM jobs ORDER BY id").fetchall()
    assert [row[0] for row in stored] == WRITTEN
    assert job_counts(result.stdout)[:3] == (len(WRITTEN), 0, 0)


def test_warnings_and_info_are_counted_and_their_jobs_written(
    cli: Any, dsn: str, every_code_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    result = cli("backfill", every_code_tree, "--dsn", dsn, "--max-json-bytes", str(MAX_JSON_BYTES))

    assert summary_row(result.stdout, "warnings") == EXPECTED_WARNINGS
    assert summary_row(result.stdout, "info") == EXPECTED_INFO
    row = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [NO_INPUT]).fetchone()
    assert row == (f"data/uploads/{NO_INPUT}/input.csv",)
    row = conn.execute("SELECT input_file_path FROM jobs WHERE id = %s", [QUIRK[7]]).fetchone()
    assert row == (None,)


def test_job_files_mirror_the_disk_without_links_hidden_or_temporary_files(
    cli: Any, dsn: str, every_code_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    cli("backfill", every_code_tree, "--dsn", dsn, "--max-json-bytes", str(MAX_JSON_BYTES))

    rows = conn.execute(
        "SELECT file_type, file_name, file_path, file_size, created_at FROM job_files"
        " WHERE job_id = %s ORDER BY file_path",
        [QUIRK[1]],
    ).fetchall()

    expected = []
    for file_type, rel in [
        ("output", f"outputs/{QUIRK[1]}/causes.csv"),
        ("input", f"uploads/{QUIRK[1]}/extra/codebook.csv"),
        ("input", f"uploads/{QUIRK[1]}/input.csv"),
    ]:
        st = os.stat(every_code_tree / rel)
        mtime = datetime(1970, 1, 1) + timedelta(microseconds=st.st_mtime_ns // 1000)
        name = rel.rsplit("/", 1)[1]
        expected.append((file_type, name, f"data/{rel}", st.st_size, mtime))
    assert [tuple(row) for row in rows] == expected


def remove(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()


def test_a_tree_without_errors_exits_0_even_with_warnings(
    cli: Any, dsn: str, every_code_tree: Path
) -> None:
    for _, _, path in EXPECTED_ERRORS:
        if path.startswith("jobs/"):
            remove(every_code_tree / path)
        else:  # hidden names are ignored
            os.rename(every_code_tree / path, every_code_tree / "outputs" / ".moved")

    result = cli("backfill", every_code_tree, "--dsn", dsn, "--max-json-bytes", str(MAX_JSON_BYTES))

    assert result.exit_code == 0, result.output
    assert "Errors" not in result.stdout
    assert summary_row(result.stdout, "warnings")["missing_id"] == 1


def test_a_job_whose_folder_cannot_be_read_is_skipped_and_the_run_exits_1(
    cli: Any, dsn: str, every_code_tree: Path
) -> None:
    for _, _, path in EXPECTED_ERRORS:
        if path.startswith("jobs/"):
            remove(every_code_tree / path)

    result = cli("backfill", every_code_tree, "--dsn", dsn)

    assert [code for code, *_ in listed_errors(result.stdout)] == ["unreadable"]
    assert job_counts(result.stdout) == (len(WRITTEN), 0, 0, 1, 0)
    assert result.exit_code == 1, result.output
