"""The report's rows are the backfill's: for every table of the public schema, found in the
catalog (so that a table added later is compared too), the rows the report says the next
backfill inserts, updates and deletes are the rows that backfill then changes."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.report.plan import build_report
from comsa_migrate.report.result import CHANGES

from .conftest import copy_fixture
from .helpers import age_tree, write_job

#: how the database is prepared before the first report and backfill
SCHEMAS = {
    "no tables": (),  # the backfill creates them
    "init-db": ("init-db",),
    "init-db --input-files": ("init-db", "--input-files"),
}
NEW_JOB = "0a1b2c3d-0000-4000-8000-0000000000aa"
#: how uploads travel to job_input_files: inside the job payloads; one large upload (over
#: what a payload carries: three chunks) streamed beside them; or every upload streamed
UPLOADS = {
    "inline": DEFAULT_INLINE_INPUT_BYTES,
    "one large": DEFAULT_INLINE_INPUT_BYTES,
    "all streamed": 0,
}
CASES = [
    *((schema, "inline") for schema in SCHEMAS),
    ("init-db --input-files", "one large"),
    ("init-db --input-files", "all streamed"),
]
LARGE = "large.bin"

#: table -> {"insert": n, "update": n, "delete": n}
Rows = dict[str, dict[str, int]]
#: table -> primary key -> the row
Snapshot = dict[str, dict[tuple[str, ...], Any]]


@dataclass(frozen=True)
class Run:
    """One report and the backfill after it."""

    predicted: Rows  # by the report, for every table of the database (0 where it says nothing)
    changed: Rows  # in the database by the backfill
    counted: dict[str, int]  # by the backfill's summary: rows written (inserted or updated)
    written_by_report: dict[str, int]  # the report's rows written, as the summary counts them
    owned: tuple[int, int]  # jobs given the --owner: by the report, by the backfill


@pytest.mark.parametrize("fixture", ["legacy-sample", "quirks"])
@pytest.mark.parametrize(("schema", "uploads"), CASES)
def test_the_report_predicts_the_rows_the_backfill_changes_in_every_table(
    cli: Any, empty_dsn: str, tmp_path: Path, fixture: str, schema: str, uploads: str
) -> None:
    tree = copy_fixture(fixture, tmp_path)
    large = None if uploads == "inline" else _add_a_large_upload(tree)
    age_tree(tree)  # fingerprints are trusted: the rerun reads only what changed
    if SCHEMAS[schema]:
        assert cli(*SCHEMAS[schema], "--dsn", empty_dsn).exit_code == 0
    options = BackfillOptions(tree, WriteOptions(inline_input_bytes=UPLOADS[uploads]))

    first = _report_then_backfill(empty_dsn, options)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        stored_inputs, removed_inputs = _change_the_tree(conn, tree)
    rerun = _report_then_backfill(empty_dsn, options)

    for run in (first, rerun):
        assert run.predicted == run.changed
        assert run.written_by_report == run.counted
    inputs = "--input-files" in schema
    assert ("job_input_files" in first.predicted) is inputs
    assert first.changed["jobs"]["insert"] > 0
    assert rerun.changed["jobs"] == {"insert": 1, "update": 1, "delete": 0}
    assert rerun.changed["job_logs"]["delete"] > 0
    assert rerun.changed["job_files"]["delete"] > 0
    if inputs:
        assert first.changed["job_input_files"]["insert"] == stored_inputs
        assert rerun.changed["job_input_files"]["insert"] == 1  # added.csv
        assert rerun.changed["job_input_files"]["update"] == 1  # the upload rewritten
        assert rerun.changed["job_input_files"]["delete"] == removed_inputs
    if large is not None:  # in the table whole, and left alone by the rerun
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT md5(content_b64) FROM job_input_files WHERE filename = %s", [LARGE]
            ).fetchone()
        assert stored == (hashlib.md5(base64.b64encode(large.read_bytes())).hexdigest(),)


def _add_a_large_upload(tree: Path) -> Path:
    """An upload too large to travel inside its job's payload, beside the uploads of the
    first job that has some."""
    job_id = min(
        folder.name
        for folder in (tree / "uploads").iterdir()
        if folder.is_dir() and (tree / "jobs" / f"{folder.name}.json").exists()
    )
    large = tree / "uploads" / job_id / LARGE
    large.write_bytes(random.Random(7).randbytes(2 * 1024 * 1024 + 1))
    return large


def _report_then_backfill(dsn: str, options: BackfillOptions) -> Run:
    with psycopg.connect(dsn, autocommit=True) as conn:
        report = build_report(conn, options)
        before = _snapshot(conn)
        summary = backfill(conn, options)
        after = _snapshot(conn)
    changed = {table: _diff(before.get(table, {}), after[table]) for table in after}
    predicted = {table: report.rows.get(table, dict.fromkeys(CHANGES, 0)) for table in after}
    assert set(report.rows) <= set(after), "the report counts rows of a table that is not there"
    counted = {table: summary.rows[table] for table in summary.tables}
    owned = (report.owned, summary.rows["owned"])
    return Run(predicted, changed, counted, report.rows_written, owned)


def _snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """Every row of every table of the public schema, by primary key."""
    tables = conn.execute(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
    ).fetchall()
    snapshot: Snapshot = {}
    for oid, table in tables:
        key = [
            name
            for (name,) in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary"
                " ORDER BY a.attnum",
                [oid],
            ).fetchall()
        ]
        assert key, f"{table} has no primary key to compare its rows by"
        query = sql.SQL("SELECT to_jsonb(t) FROM public.{} t").format(sql.Identifier(table))
        rows = [row for (row,) in conn.execute(query).fetchall()]
        snapshot[table] = {tuple(str(row[name]) for name in key): row for row in rows}
    return snapshot


def _diff(before: dict[tuple[str, ...], Any], after: dict[tuple[str, ...], Any]) -> dict[str, int]:
    kept = before.keys() & after.keys()
    return {
        "insert": len(after.keys() - before.keys()),
        "update": sum(before[key] != after[key] for key in kept),
        "delete": len(before.keys() - after.keys()),
    }


def _change_the_tree(conn: psycopg.Connection[Any], tree: Path) -> tuple[int, int]:
    """Change what a rerun writes in every table: a job JSON edited (its row and its logs)
    and given one more output, one job's uploads rewritten, added and removed (its large
    upload, if any, left as it is), a new job, and a job JSON removed (which the backfill
    leaves alone). Returns how many uploads the job_input_files of the job with uploads
    held, when the table exists, and how many of them were removed."""
    upload_job, uploads = conn.execute(
        "SELECT job_id::text, array_agg(file_path ORDER BY file_path) FROM job_files"
        " WHERE file_type = 'input' GROUP BY job_id ORDER BY job_id LIMIT 1"
    ).fetchone() or (None, [])
    assert upload_job is not None, "the fixture has a job with uploads"
    edited, removed = conn.execute(
        "SELECT s.job_id::text, s.source_path FROM comsa_migrate.job_state s WHERE s.job_id <> %s"
        " ORDER BY s.job_id LIMIT 2",
        [upload_job],
    ).fetchall()
    stored_inputs = 0
    if conn.execute("SELECT to_regclass('public.job_input_files')").fetchone() != (None,):
        row = conn.execute(
            "SELECT count(*) FROM job_input_files WHERE job_id = %s", [upload_job]
        ).fetchone()
        stored_inputs = int(row[0]) if row else 0

    edited_id, edited_json = edited
    _edit_job_json(tree / edited_json)
    (tree / "outputs" / edited_id).mkdir(parents=True, exist_ok=True)
    (tree / "outputs" / edited_id / "added.csv").write_text("cause,n\nMalaria,1\n")
    (tree / removed[1]).unlink()
    # file_path is written as the dashboard opens it: data/uploads/<id>/...
    on_disk = [tree / path.split("/", 1)[1] for path in uploads if not path.endswith(LARGE)]
    with on_disk[0].open("a") as upload:
        upload.write("one more line\n")
    if len(on_disk) > 1:
        on_disk[-1].unlink()
    (tree / "uploads" / upload_job / "added.csv").write_text("id\n1\n")
    write_job(tree, NEW_JOB)
    return stored_inputs, int(len(on_disk) > 1)


def _edit_job_json(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8-sig"))
    log = doc.get("log")
    lines = [log] if isinstance(log, str) else list(log or [])
    doc.update(country="Malawi", log=[*lines, "[2026-02-01 10:00:00] rerun"])
    path.write_text(json.dumps(doc))


def test_with_an_owner_the_report_predicts_the_jobs_the_backfill_gives_it(
    empty_dsn: str, tmp_path: Path
) -> None:
    """--owner: the backfill gives the jobs it wrote before and nobody owns the owner at its
    start (rows updated for that alone), and each job it inserts; the report says so."""
    tree = copy_fixture("legacy-sample", tmp_path)
    age_tree(tree)
    schema = Path(__file__).resolve().parent.parent / "fixtures" / "dashboard-schema"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for name in ("001_initial_schema.sql", "002_users.sql"):
            conn.execute((schema / name).read_text().encode())
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('a@example.org', 'x')")
    options = BackfillOptions(tree, WriteOptions(owner="a@example.org"))
    first = _report_then_backfill(empty_dsn, options)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        disowned, edited = conn.execute("SELECT id::text FROM jobs ORDER BY id LIMIT 2").fetchall()
        conn.execute(
            "UPDATE jobs SET user_id = NULL WHERE id = ANY(%s::uuid[])", [[*disowned, *edited]]
        )
        source = conn.execute(
            "SELECT source_path FROM comsa_migrate.job_state WHERE job_id = %s", [edited[0]]
        ).fetchone()
    assert source is not None
    _edit_job_json(tree / source[0])  # its row is rewritten: its owner goes with it
    write_job(tree, NEW_JOB)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        report = build_report(conn, options)
    rerun = _report_then_backfill(empty_dsn, options)

    for run in (first, rerun):
        assert run.predicted == run.changed
        assert run.written_by_report == run.counted
    assert first.owned == (11, 11)
    assert rerun.owned == (3, 3)  # the two disowned (one of them also edited) and the new one
    assert rerun.changed["jobs"] == {"insert": 1, "update": 2, "delete": 0}
    assert report.owner == "a@example.org"
