"""The report against a database: drift, schema states, the read-only guarantee, agreement."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.db.migrations import migrations, repeatables
from comsa_migrate.db.plans import plan_batch
from comsa_migrate.db.writes import apply_batch
from comsa_migrate.observer import JobResult
from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.report.plan import build_report
from comsa_migrate.report.result import Report

from .conftest import Databases, copy_fixture, database_name, dsn_for, fresh_database
from .helpers import age_tree, edit_job_json, row_digest, table_counts, wait_until, write_job

FAILED_JOB = "a817efa9-c5e7-4731-a6ee-ff6d9228f310"  # failed, 2 log lines, no files
COMPLETED_JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"  # 11 log lines, 2 outputs
OTHER_JOB = "86b81ed5-d4c1-4a8d-80ce-ed6efe93378b"  # 2 outputs
THIRD_JOB = "8944653b-2520-4f32-aa3b-230ccbaed31a"  # 2 outputs
DRIFT_CODES = ("db_only", "db_changed", "file_missing", "size_mismatch", "schema_missing")
HOUR_NS = 3600 * 10**9


def _report(conn: psycopg.Connection[Any] | None, data_dir: Path, **options: Any) -> Report:
    return build_report(conn, BackfillOptions(data_dir, WriteOptions(**options)), target="test")


def _drifts(report: Report) -> dict[str, list[str | None]]:
    found: dict[str, list[str | None]] = {}
    for problem in report.problems:
        if problem.code in DRIFT_CODES:
            found.setdefault(problem.code, []).append(problem.job_id)
    return found


def _actions(report: Report) -> dict[str, str]:
    return {job.id: job.action for job in report.jobs}


def _backfill(conn: psycopg.Connection[Any], data_dir: Path, force: bool = False) -> Any:
    results: dict[str, str] = {}

    class Actions:
        def on_problem(self, problem: Any) -> None:
            pass

        def on_job(self, result: JobResult) -> None:
            results[result.job_id] = result.action

    summary = backfill(
        conn, BackfillOptions(data_dir, WriteOptions(force=force)), observers=[Actions()]
    )
    return results, summary


def _touch_into_the_past(path: Path) -> None:
    """A rewrite an hour ago: its new fingerprint is trusted at once (not racy)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, time.time_ns() - HOUR_NS))


def _edit_json_an_hour_ago(data_dir: Path, job_id: str, **changes: Any) -> None:
    _touch_into_the_past(edit_job_json(data_dir, job_id, **changes))


@pytest.fixture
def backfilled_sample(conn: psycopg.Connection[Any], sample_tree: Path) -> Path:
    """The sample tree, aged so that stat decides, after one backfill."""
    age_tree(sample_tree)
    _backfill(conn, sample_tree)
    return sample_tree


class BackfilledDb(NamedTuple):
    conn: psycopg.Connection[Any]
    dsn: str
    tree: Path  # read only: shared by the module's tests


@pytest.fixture(scope="module")
def backfilled_template(
    databases: Databases, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A database holding one backfill of the aged sample tree, to copy databases from, and
    that tree, for the tests that change only the database."""
    tree = copy_fixture("legacy-sample", tmp_path_factory.mktemp("drift"))
    age_tree(tree)
    template = database_name("template")
    with psycopg.connect(databases.admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{template}" TEMPLATE "{template_db}"')
    try:
        with psycopg.connect(dsn_for(databases.admin_dsn, template), autocommit=True) as conn:
            _backfill(conn, tree)
        yield template, tree
    finally:
        databases.drop(template)


@pytest.fixture
def backfilled_db(
    databases: Databases, backfilled_template: tuple[str, Path]
) -> Iterator[BackfilledDb]:
    """The state of backfilled_sample, copied from backfilled_template: change only the
    database, not the tree."""
    template, tree = backfilled_template
    with (
        fresh_database(databases, template) as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        yield BackfilledDb(conn, dsn, tree)


# -- drift ------------------------------------------------------------------------------------


def test_hand_edits_show_exactly_their_drifts(backfilled_db: BackfilledDb) -> None:
    conn, _, tree = backfilled_db
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])
    conn.execute(
        "UPDATE job_files SET file_size = 1 WHERE job_id = %s AND file_name = 'causes.csv'",
        [OTHER_JOB],
    )
    conn.execute("DELETE FROM jobs WHERE id = %s", [FAILED_JOB])

    report = _report(conn, tree)

    assert _drifts(report) == {"db_changed": [COMPLETED_JOB], "size_mismatch": [OTHER_JOB]}
    actions = _actions(report)
    assert actions[FAILED_JOB] == "insert"
    assert actions[COMPLETED_JOB] == "unchanged"
    assert actions[OTHER_JOB] == "unchanged"
    assert report.actions["unchanged"] == 10
    assert report.rows["jobs"] == {"insert": 1, "update": 0, "delete": 0}
    assert report.rows["job_logs"] == {"insert": 2, "update": 0, "delete": 0}
    assert not report.fails()


def test_the_next_backfill_restores_a_deleted_job_as_the_report_said(
    backfilled_db: BackfilledDb,
) -> None:
    conn, _, tree = backfilled_db
    conn.execute("DELETE FROM jobs WHERE id = %s", [FAILED_JOB])
    report = _report(conn, tree)

    results, summary = _backfill(conn, tree)

    assert results[FAILED_JOB] == _actions(report)[FAILED_JOB] == "insert"
    assert table_counts(conn) == {"jobs": 11, "job_logs": 89, "job_files": 16}
    assert _drifts(_report(conn, tree)) == {}


def test_a_size_edited_with_something_else_is_db_changed_too(backfilled_db: BackfilledDb) -> None:
    conn, _, tree = backfilled_db
    conn.execute(
        "UPDATE job_files SET file_size = 1, file_name = 'renamed.csv'"
        " WHERE job_id = %s AND file_name = 'causes.csv'",
        [OTHER_JOB],
    )

    assert _drifts(_report(conn, tree)) == {
        "db_changed": [OTHER_JOB],
        "size_mismatch": [OTHER_JOB],
    }


def test_a_job_with_no_json_on_disk_is_db_only(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    (backfilled_sample / "jobs" / f"{FAILED_JOB}.json").unlink()

    report = _report(conn, backfilled_sample)

    assert _drifts(report) == {"db_only": [FAILED_JOB]}
    assert FAILED_JOB not in _actions(report)


def test_a_job_files_row_whose_file_is_gone_is_file_missing_and_the_job_an_update(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    (backfilled_sample / "outputs" / OTHER_JOB / "causes.csv").unlink()

    report = _report(conn, backfilled_sample)

    assert _drifts(report) == {"file_missing": [OTHER_JOB]}
    assert _actions(report)[OTHER_JOB] == "update"
    assert report.rows["job_files"] == {"insert": 1, "update": 0, "delete": 2}
    assert report.rows["jobs"] == {"insert": 0, "update": 0, "delete": 0}


def test_a_file_grown_on_disk_is_a_size_mismatch_until_the_backfill_updates_it(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    path = backfilled_sample / "outputs" / OTHER_JOB / "causes.csv"
    with open(path, "a") as fh:
        fh.write("Malaria,1\n")
    _touch_into_the_past(path)

    report = _report(conn, backfilled_sample)
    _backfill(conn, backfilled_sample)

    assert _drifts(report) == {"size_mismatch": [OTHER_JOB]}
    assert _actions(report)[OTHER_JOB] == "update"
    assert _drifts(_report(conn, backfilled_sample)) == {}


def test_rows_changed_in_the_database_and_in_the_file_are_a_conflict(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])
    _edit_json_an_hour_ago(backfilled_sample, COMPLETED_JOB, country="Kenya")

    report = _report(conn, backfilled_sample)
    forced = _report(conn, backfilled_sample, force=True)

    assert _actions(report)[COMPLETED_JOB] == "conflict"
    assert report.fails()
    changed = [p for p in report.problems if p.code == "db_changed"]
    assert [p.message for p in changed] == [
        "the rows were changed since comsa-migrate wrote them, and the file changed too: "
        "a conflict (--force overwrites)"
    ]
    assert _actions(forced)[COMPLETED_JOB] == "update"
    assert forced.rows["jobs"] == {"insert": 0, "update": 1, "delete": 0}


def test_cli_report_shows_drift_codes_as_warnings(cli: Any, backfilled_db: BackfilledDb) -> None:
    conn, dsn, tree = backfilled_db
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])

    result = cli("report", tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "db_changed (1): the job's rows were changed since comsa-migrate wrote them" in (
        result.stdout
    )
    assert cli("report", tree, "--dsn", dsn, "--fail-on", "warning").exit_code == 1


# -- schema states ----------------------------------------------------------------------------


def test_a_new_database_without_tables_plans_inserts_passes_and_stays_empty(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    result = cli("report", sample_tree, "--dsn", empty_dsn, "--format", "json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "schema_missing" not in report["summary"]["problems"]["by_code"]
    assert any("none of the dashboard's tables" in n for n in report["database"]["notes"])
    assert report["summary"]["jobs"]["by_action"]["insert"] == 11
    assert report["summary"]["rows"]["job_logs"]["insert"] == 89
    assert report["database"]["pending_migrations"] == [m.file_name for m in migrations()]
    with psycopg.connect(empty_dsn) as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'comsa_migrate'"
        ).fetchone()
        tables = conn.execute("SELECT to_regclass('public.jobs')").fetchone()
    assert schemas == (0,)
    assert tables == (None,)


def test_a_partial_dashboard_schema_is_schema_missing_and_fails(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id uuid PRIMARY KEY)")

    result = cli("report", sample_tree, "--dsn", empty_dsn, "--format", "json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["summary"]["problems"]["by_code"]["schema_missing"] == 1


def test_tables_without_bookkeeping_count_existing_jobs_as_conflicts(
    empty_dsn: str, sample_tree: Path
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(migrations()[0].sql.encode())  # what the dashboard does by hand
        conn.execute(
            "INSERT INTO jobs (id, type, status) VALUES (%s, 'pipeline', 'completed'),"
            " ('00000000-0000-4000-8000-000000000001', 'pipeline', 'completed')",
            [COMPLETED_JOB],
        )

        report = _report(conn, sample_tree)

    assert _actions(report)[COMPLETED_JOB] == "conflict"
    assert report.actions["insert"] == 10
    assert _drifts(report) == {"db_only": ["00000000-0000-4000-8000-000000000001"]}
    assert any("bookkeeping is not installed" in note for note in report.database.notes)
    assert report.database.pending_migrations[0].startswith("001_")


# -- the read-only guarantee ------------------------------------------------------------------


def _wait_for_other_sessions_to_end(conn: psycopg.Connection[Any]) -> None:
    """A session's statistics are flushed before it leaves pg_stat_activity."""
    wait_until(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            == (0,)
        ),
        30,
        "the other sessions of the database to end",
    )


def _database_state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    _wait_for_other_sessions_to_end(conn)
    bookkeeping = conn.execute(
        "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ("
        " SELECT xmin::text || r::text AS t FROM comsa_migrate.runs r"
        " UNION ALL SELECT xmin::text || s::text FROM comsa_migrate.job_state s"
        " UNION ALL SELECT xmin::text || m::text FROM comsa_migrate.schema_migrations m) rows"
    ).fetchone()
    writes = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY 1"
    ).fetchall()
    relations = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('public', 'comsa_migrate')"
    ).fetchone()
    return row_digest(conn), bookkeeping, writes, relations


def test_the_report_changes_nothing_in_the_database(
    cli: Any, dsn: str, conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])
    conn.execute("DELETE FROM jobs WHERE id = %s", [FAILED_JOB])
    _edit_json_an_hour_ago(backfilled_sample, THIRD_JOB, country="Kenya")
    write_job(backfilled_sample, "00000000-0000-4000-8000-00000000000a")
    before = _database_state(conn)

    for fmt in ("text", "json", "markdown"):
        assert cli("report", backfilled_sample, "--dsn", dsn, "--format", fmt).exit_code == 0
    assert cli("backfill", backfilled_sample, "--dsn", dsn, "--dry-run").exit_code == 0

    assert _database_state(conn) == before


def test_the_state_probe_sees_a_real_backfill(
    cli: Any, dsn: str, conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    write_job(backfilled_sample, "00000000-0000-4000-8000-00000000000a")
    digest, bookkeeping, writes, relations = _database_state(conn)

    cli("backfill", backfilled_sample, "--dsn", dsn)

    after = _database_state(conn)
    assert after[0] != digest
    assert after[1] != bookkeeping
    assert after[2] != writes


# -- agreement with the next backfill -----------------------------------------------------------


def _agreement(conn: psycopg.Connection[Any], data_dir: Path, force: bool = False) -> None:
    report = _report(conn, data_dir, force=force)
    results, summary = _backfill(conn, data_dir, force=force)

    assert _actions(report) == results
    assert {a: n for a, n in report.actions.items() if a != "undecided"} == {
        a: summary.actions[a] for a in report.actions if a != "undecided"
    }
    assert report.rows_written == {t: summary.rows[t] for t in report.rows}


def test_report_and_backfill_agree_on_a_fresh_database(
    conn: psycopg.Connection[Any], sample_tree: Path, quirks_tree: Path
) -> None:
    _agreement(conn, sample_tree)
    _agreement(conn, quirks_tree)


def test_report_and_backfill_agree_job_by_job_after_every_kind_of_change(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])  # drift
    conn.execute("UPDATE jobs SET country = 'Mali' WHERE id = %s", [THIRD_JOB])
    _edit_json_an_hour_ago(backfilled_sample, THIRD_JOB, country="Kenya")  # conflict
    conn.execute("DELETE FROM jobs WHERE id = %s", [FAILED_JOB])  # insert again
    _edit_json_an_hour_ago(backfilled_sample, OTHER_JOB, status="failed")  # update
    (backfilled_sample / "outputs" / "e4525edc-8ee7-4430-894e-d3bc86bac5fb" / "causes.csv").unlink()
    write_job(backfilled_sample, "00000000-0000-4000-8000-00000000000a")  # new
    (backfilled_sample / "jobs" / "00000000-0000-4000-8000-00000000000b.json").write_text(
        "{"
    )  # skip
    write_job(backfilled_sample, "00000000-0000-4000-8000-00000000000c", {"source": "sidecar"})

    _agreement(conn, backfilled_sample)
    _agreement(conn, backfilled_sample)  # the rerun: unchanged by stat, conflicts stay


def test_report_and_backfill_agree_with_force(
    conn: psycopg.Connection[Any], backfilled_sample: Path
) -> None:
    conn.execute("UPDATE jobs SET status = 'failed' WHERE id = %s", [COMPLETED_JOB])
    _edit_json_an_hour_ago(backfilled_sample, COMPLETED_JOB, country="Kenya")

    _agreement(conn, backfilled_sample, force=True)


def test_a_job_the_database_cannot_plan_is_an_error_as_when_writing(
    conn: psycopg.Connection[Any],
) -> None:
    good = orjson.dumps(_payload("00000000-0000-4000-8000-000000000001", "2025-01-01T00:00:00"))
    bad = orjson.dumps(_payload("00000000-0000-4000-8000-000000000002", "not a time"))

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        plans = plan_batch(conn, [good, bad, good], force=False)
    outcomes = apply_batch(conn, [good, bad], force=False, run_id=None)

    assert [p.action for p in plans] == ["insert", "error", "insert"]
    assert [o.action for o in outcomes] == ["insert", "error"]
    assert plans[1].message and "not a time" in plans[1].message


def _payload(job_id: str, created_at: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "pipeline",
        "status": "completed",
        "created_at": created_at,
        "error": {},
        "result": {},
        "logs": [],
        "files": [],
        "fingerprint": "f",
        "source_path": f"jobs/{job_id}.json",
    }


def test_a_role_that_cannot_read_the_bookkeeping_is_one_line_and_exit_2(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    role = f"comsa_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    params = conninfo_to_dict(dsn)
    params["user"] = role
    try:
        result = cli("report", sample_tree, "--dsn", make_conninfo(**params))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')

    assert result.exit_code == 2
    assert "permission denied for schema comsa_migrate" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_a_database_of_the_last_release_gets_an_upper_bound_of_rows_until_its_upgrade(
    empty_dsn: str, sample_tree: Path
) -> None:
    """rewrites() is new in this version: on a database whose functions are 0.2.0's, the
    report cannot tell which part of a job an update rewrites, counts them all, and says so;
    once the database is upgraded it counts exactly."""
    from comsa_migrate.db.migrations import migrate

    dump = (
        Path(__file__).resolve().parent.parent / "fixtures" / "upgrade" / "comsa-migrate-0.2.0.sql"
    )
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(dump.read_text().encode())
        older = _report(conn, sample_tree)
        migrate(conn)
        exact = _report(conn, sample_tree)

    assert _actions(older) == _actions(exact)
    assert "update" in _actions(exact).values()  # 0.2.0 wrote other mtimes
    assert older.rows["job_logs"]["delete"] == older.rows["job_logs"]["insert"] > 0
    assert exact.rows["job_logs"] == {"insert": 0, "update": 0, "delete": 0}
    assert older.rows["job_files"] == exact.rows["job_files"]
    assert any("functions are older" in note for note in older.database.notes)
    assert not any("functions are older" in note for note in exact.database.notes)
    functions = [name for name in older.database.pending_migrations if "functions/" in name]
    assert functions == [r.name for r in repeatables()]  # all again, after 0.2.0's migrations
    assert exact.database.pending_migrations == ()
