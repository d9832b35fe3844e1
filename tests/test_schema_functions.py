"""Functions and procedures live once each, in the repeatable files of schema/functions/,
applied again whenever their text changes; databases of earlier releases upgrade in place."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.normalise import JOB_COLUMNS, parse_job
from comsa_migrate.core.payload import WriteSettings, job_payload
from comsa_migrate.db import migrations
from comsa_migrate.db.migrations import EARLIER_FORMS, Repeatable, repeatables

SCHEMA = Path(__file__).resolve().parent.parent / "schema"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEFINITION = re.compile(
    r"^CREATE (?:OR REPLACE )?(?:FUNCTION|PROCEDURE) comsa_migrate\.(\w+)\(", re.M | re.I
)


def definitions(path: Path) -> list[str]:
    return DEFINITION.findall(path.read_text())


def test_every_function_is_defined_in_exactly_one_file_of_schema_functions() -> None:
    defined: dict[str, list[str]] = {}
    for path in sorted(SCHEMA.rglob("*.sql")):
        for name in definitions(path):
            defined.setdefault(name, []).append(str(path.relative_to(SCHEMA)))

    assert defined["apply_job"] == ["functions/40_apply_job.sql"]
    # overloads of one name (apply_job_outcome's two forms) are defined side by side
    assert all(len(set(files)) == 1 for files in defined.values()), defined
    assert all(files[0].startswith("functions/") for files in defined.values()), defined


def test_no_numbered_migration_defines_a_lasting_function() -> None:
    for path in sorted(SCHEMA.glob("0*.sql")):
        text = path.read_text()
        assert not definitions(path), path.name
        # a conversion may need functions of its own, for its session only, and drops them
        for name in re.findall(r"CREATE FUNCTION (pg_temp\.\w+)\(", text):
            assert f"DROP FUNCTION {name}(" in text, (path.name, name)


def test_a_changed_function_file_is_applied_again_and_the_others_are_not(
    cli: Any, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = repeatables()
    changed = replace(shipped[0], sql=shipped[0].sql + "\n-- a comment is a change too\n")
    monkeypatch.setattr(migrations, "repeatables", lambda: [changed, *shipped[1:]])

    first = cli("init-db", "--dsn", dsn)
    second = cli("init-db", "--dsn", dsn)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [f"applied {changed.name}"]
    assert second.stdout.strip().endswith("schema is up to date")
    with psycopg.connect(dsn) as conn:
        recorded = dict(
            conn.execute("SELECT name, checksum FROM comsa_migrate.schema_repeatables").fetchall()
        )
    assert recorded == {r.name: r.checksum for r in [changed, *shipped[1:]]}


def test_a_function_file_that_fails_applies_nothing_and_names_itself(
    cli: Any, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Repeatable("functions/99_broken.sql", "CREATE FUNCTION comsa_migrate.x( AS")
    monkeypatch.setattr(migrations, "repeatables", lambda: [*repeatables(), broken])

    result = cli("init-db", "--dsn", dsn)

    assert result.exit_code == 2
    assert "functions/99_broken.sql" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(dsn) as conn:
        names = conn.execute("SELECT name FROM comsa_migrate.schema_repeatables").fetchall()
    assert ("functions/99_broken.sql",) not in names


def test_the_forms_migrations_shipped_in_before_are_not_the_files_of_today() -> None:
    today = {m.version: m.checksum for m in migrations.migrations()}

    assert all(today[version] not in forms for version, forms in EARLIER_FORMS.items())


@pytest.mark.parametrize("release", ["0.1.0", "0.2.0"])
def test_a_database_of_an_earlier_release_upgrades_in_place(
    cli: Any, empty_dsn: str, sample_tree: Path, release: str
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        dump = FIXTURES / "upgrade" / f"comsa-migrate-{release}.sql"
        conn.execute(dump.read_text().encode())

    upgrade = cli("init-db", "--dsn", empty_dsn)
    backfill = cli("backfill", sample_tree, "--dsn", empty_dsn)
    rerun = cli("backfill", sample_tree, "--dsn", empty_dsn)

    assert upgrade.exit_code == 0, upgrade.output
    assert [f"applied {r.name}" for r in repeatables()] == [
        line for line in upgrade.stdout.splitlines() if "functions/" in line
    ]
    assert backfill.exit_code == 0, backfill.output
    # updated, not inserted: 0.1.0 wrote paths relative to DATA_DIR, and in both the copied
    # files have new mtimes
    assert "  jobs        0 inserted, " in backfill.stdout
    assert " 0 skipped, 0 conflicts\n" in backfill.stdout
    assert "11 unchanged" in rerun.stdout
    with psycopg.connect(empty_dsn) as conn:
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'comsa_migrate'::regnamespace"
        ).fetchone()
        owner = conn.execute(
            "SELECT u.email FROM public.jobs j JOIN public.users u ON u.id = j.user_id"
        ).fetchall()
    assert functions == (sum(len(DEFINITION.findall(r.sql)) for r in repeatables()),)
    assert owner == [("analyst@example.org",)]  # the dashboard's owner, kept
    with psycopg.connect(empty_dsn, autocommit=True) as conn:  # a 0.2.0 process still writes
        called = conn.execute("CALL comsa_migrate.apply_jobs('[]', false, NULL, NULL)")
        assert called.fetchone() == ([],)


def test_the_dashboards_ddl_that_init_db_runs_is_the_dashboards_own() -> None:
    """schema/dashboard_job_input_files.sql runs the statements of the dashboard's 003."""
    shipped = _statements(SCHEMA / "dashboard_job_input_files.sql")
    dashboards = _statements(FIXTURES / "dashboard-schema" / "003_input_file_storage.sql")

    assert shipped == dashboards


@pytest.mark.parametrize("number", ["001_initial_schema"])
def test_the_dashboards_migrations_that_comsa_migrate_ships_are_the_dashboards_own(
    number: str,
) -> None:
    """schema/001 runs the statements of the dashboard's own 001 (comments aside)."""
    shipped = _statements(SCHEMA / f"{number}.sql")
    dashboards = _statements(FIXTURES / "dashboard-schema" / f"{number}.sql")

    assert shipped == dashboards


def test_the_functions_name_the_columns_of_jobs_that_the_payload_carries() -> None:
    """written_job() compares, and apply_job() upserts, exactly normalise.JOB_COLUMNS."""
    content = (SCHEMA / "functions" / "20_job_content.sql").read_text()
    written = re.search(
        r"written_job\(r public\.jobs\).*?jsonb_build_object\((.*?)\)\n", content, re.S
    )
    assert written is not None
    compared = re.findall(r"'(\w+)', r\.(\w+)", written.group(1))
    apply_job = (SCHEMA / "functions" / "40_apply_job.sql").read_text()
    upsert = re.search(r"ON CONFLICT \(id\) DO UPDATE SET(.*?);", apply_job, re.S)
    assert upsert is not None
    updated = re.findall(r"(\w+) = EXCLUDED\.(\w+)", upsert.group(1))

    assert [key for key, column in compared if key == column] == list(JOB_COLUMNS)
    assert [column for column, same in updated if column == same] == list(JOB_COLUMNS[1:])


def test_the_payload_carries_the_columns_of_jobs_first_in_their_order() -> None:
    raw = b'{"id": "0a1b2c3d-0000-4000-8000-00000000abcd", "type": "vacalibration",'
    raw += b' "status": "pending", "created_at": "2026-01-02 10:00:00"}'
    job_id = "0a1b2c3d-0000-4000-8000-00000000abcd"
    source = JobSource(job_id, f"jobs/{job_id}.json", len(raw), 0, 0, (), (), "fp")
    record = parse_job(raw, source, Path("/nonexistent")).record
    assert record is not None

    keys = list(orjson.loads(job_payload(record, WriteSettings())))

    assert keys[: len(JOB_COLUMNS)] == list(JOB_COLUMNS)


def _statements(path: Path) -> list[str]:
    code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
    return [" ".join(s.split()) for s in code.split(";") if s.strip()]


def test_the_per_job_functions_inline_written_job(conn: psycopg.Connection[Any]) -> None:
    """A call of written_job() that the planner does not inline is parsed and planned again
    for each job (before PostgreSQL 18): it took more time than the rest of a job's plan.
    With track_functions, every call that is not inlined is counted."""
    job_id = "0a1b2c3d-0000-4000-8000-00000000abcd"
    job = orjson.dumps({"id": job_id, "type": "pipeline", "status": "pending"}).decode()
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL track_functions = 'all'")
        conn.execute(
            "INSERT INTO jobs (id, type, status) VALUES (%s, 'pipeline', 'pending')", [job_id]
        )
        conn.execute("SELECT comsa_migrate.incoming_content(%s::jsonb)", [job])
        conn.execute("SELECT comsa_migrate.stored_content(%s)", [job_id])
        called = {
            name for (name,) in conn.execute("SELECT funcname FROM pg_stat_xact_user_functions")
        }

    assert {"incoming_content", "stored_content"} <= called  # the calls are counted
    assert "written_job" not in called
    # given a call rather than a row, it is inlined with the call written once a column
    incoming = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'incoming_content'")
    assert "comsa_migrate.written_job(r)" in str(incoming.fetchone())


def test_which_part_of_a_job_a_write_rewrites_is_decided_in_rewrites_alone() -> None:
    """apply_job() writes by rewrites(), and the report counts rows by it (db/plans.py)."""
    comparison = re.compile(r"stored->'(job|logs|files|inputs)'\s*(<>|=|IS DISTINCT)")
    sources = [*SCHEMA.glob("functions/*.sql"), *(SCHEMA.parent / "comsa_migrate").rglob("*.py")]

    assert [path.name for path in sources if comparison.search(path.read_text())] == []
    assert "comsa_migrate.rewrites(" in (SCHEMA / "functions" / "40_apply_job.sql").read_text()
    plans = (SCHEMA.parent / "comsa_migrate" / "db" / "plans.py").read_text()
    assert "comsa_migrate.rewrites(" in plans
