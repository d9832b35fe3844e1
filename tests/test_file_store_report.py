"""report --file-store: the store checked against stored_files and the disk, read only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import psycopg

from .file_store_helpers import digest, job_with_outputs, stored_rows
from .helpers import new_job_id

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "report-schema.json"


def _report(cli: Any, data: Path, dsn: str, *args: str) -> Any:
    return cli("report", data, "--dsn", dsn, "--file-store", "db", *args)


def _findings(result: Any) -> dict[str, list[str]]:
    document = json.loads(result.stdout)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    found: dict[str, list[str]] = {}
    for finding in document["file_store"]["findings"]:
        found.setdefault(finding["finding"], []).append(finding["path"])
    return found


def test_a_whole_store_passes_and_its_size_is_stated(cli: Any, dsn: str, data: Path) -> None:
    job_with_outputs(data, {"causes.csv": b"a" * 1000, "copy.csv": b"a" * 1000})
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    text = _report(cli, data, dsn)
    as_json = _report(cli, data, dsn, "--format", "json")

    assert text.exit_code == 0, text.output
    assert "db: 2 contents" in " ".join(text.stdout.split())  # the JSON, one output content
    assert "3 files recorded" in " ".join(text.stdout.split())
    store = json.loads(as_json.stdout)["file_store"]
    assert store["contents"] == 2 and store["files"] == 3 and store["verified"] == 2
    json_size = next((data / "jobs").glob("*.json")).stat().st_size
    assert store["bytes"] == 1000 + json_size
    assert _findings(as_json) == {}


def test_a_content_missing_from_the_store_is_an_error(cli: Any, dsn: str, data: Path) -> None:
    job_id = job_with_outputs(data, {"causes.csv": b"cause,n\n"})
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM comsa_migrate.file_contents WHERE sha256 = %s", [digest(b"cause,n\n")]
        )

    result = _report(cli, data, dsn, "--format", "json")

    assert result.exit_code == 1
    assert _findings(result) == {"stored_content_missing": [f"outputs/{job_id}/causes.csv"]}


def test_a_content_whose_bytes_are_not_its_checksum_is_an_error(
    cli: Any, dsn: str, data: Path
) -> None:
    job_id = job_with_outputs(data, {"causes.csv": b"cause,n\n"})
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE comsa_migrate.file_chunks SET data = 'other' WHERE sha256 = %s",
            [digest(b"cause,n\n")],
        )

    result = _report(cli, data, dsn, "--format", "json")
    text = _report(cli, data, dsn)

    assert result.exit_code == 1
    assert _findings(result) == {"stored_content_corrupt": [f"outputs/{job_id}/causes.csv"]}
    assert "stored_content_corrupt (1)" in text.stdout


def test_a_file_changed_or_removed_since_it_was_stored_is_said(
    cli: Any, dsn: str, data: Path
) -> None:
    job_id = job_with_outputs(data, {"causes.csv": b"first", "plot.png": b"png"})
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    (data / "outputs" / job_id / "causes.csv").write_bytes(b"changed")
    (data / "outputs" / job_id / "plot.png").unlink()

    result = _report(cli, data, dsn, "--format", "json")
    strict = _report(cli, data, dsn, "--fail-on", "warning")

    assert result.exit_code == 0  # a warning and an info: the next run stores the change
    assert _findings(result) == {
        "changed_since_stored": [f"outputs/{job_id}/causes.csv"],
        "removed_since_stored": [f"outputs/{job_id}/plot.png"],
    }
    assert strict.exit_code == 1
    assert "its last content is kept" in " ".join(strict.stdout.split())


def test_after_the_next_run_a_removed_file_is_counted_as_kept(
    cli: Any, dsn: str, data: Path
) -> None:
    job_id = job_with_outputs(data, {"plot.png": b"png"})
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    (data / "outputs" / job_id / "plot.png").unlink()
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")

    result = _report(cli, data, dsn)

    assert result.exit_code == 0, result.output
    assert "1 no longer on disk, their last content kept" in " ".join(result.stdout.split())
    assert stored_rows(dsn)[f"outputs/{job_id}/plot.png"][2] is False


def test_a_dry_run_backfill_plans_the_rows_and_checks_the_store(
    cli: Any, dsn: str, data: Path
) -> None:
    job_id = job_with_outputs(data, {"causes.csv": b"first"})
    (data / "jobs" / f"{new_job_id()}.json").write_text('{"algorithm": ["InterVA"]}')  # sidecar
    cli("backfill", data, "--dsn", dsn, "--file-store", "db")
    (data / "outputs" / job_id / "causes.csv").write_bytes(b"changed")

    result = cli("backfill", data, "--dsn", dsn, "--file-store", "db", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "changed_since_stored (1)" in result.stdout
    assert "1 update" in " ".join(result.stdout.split())  # its job_files row's size


def test_without_a_database_the_store_cannot_be_checked(cli: Any, data: Path) -> None:
    result = cli("report", data, "--offline", "--file-store", "db")

    assert result.exit_code == 2
    assert "give a database" in result.output
