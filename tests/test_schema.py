"""init-db: migrations applied in order, recorded, idempotent, adopting hand-made tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.db.migrations import migrations, repeatables

SPEC_INDEXES = {
    "jobs_pkey",
    "idx_jobs_status",
    "idx_jobs_created_at",
    "idx_jobs_algorithm",
    "idx_jobs_country",
    "job_logs_pkey",
    "idx_job_logs_job_id",
    "job_files_pkey",
    "idx_job_files_job_id",
    "idx_job_files_type",
}


def test_init_db_applies_every_migration_once_and_records_its_checksum(
    cli: Any, empty_dsn: str
) -> None:
    first = cli("init-db", "--dsn", empty_dsn)
    second = cli("init-db", "--dsn", empty_dsn)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        *(f"applied {m.file_name}" for m in migrations()),
        *(f"applied {r.name}" for r in repeatables()),
    ]
    assert second.exit_code == 0
    assert second.stdout.strip().endswith("schema is up to date")
    with psycopg.connect(empty_dsn) as conn:
        recorded = conn.execute(
            "SELECT version, checksum, adopted FROM comsa_migrate.schema_migrations ORDER BY 1"
        ).fetchall()
        functions = conn.execute(
            "SELECT name, checksum FROM comsa_migrate.schema_repeatables ORDER BY 1"
        ).fetchall()
    assert recorded == [(m.version, m.checksum, False) for m in migrations()]
    assert functions == [(r.name, r.checksum) for r in repeatables()]


def test_the_tables_match_the_spec_with_every_named_index_and_constraint(
    conn: psycopg.Connection[Any],
) -> None:
    indexes = {
        row[0]
        for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
    }
    constraints = conn.execute(
        "SELECT conname, confdeltype FROM pg_constraint"
        " WHERE conrelid IN ('jobs'::regclass, 'job_logs'::regclass, 'job_files'::regclass)"
        " AND contype IN ('c', 'f') ORDER BY conname"
    ).fetchall()
    columns = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable"
        " FROM information_schema.columns WHERE table_name = 'jobs' ORDER BY ordinal_position"
    ).fetchall()

    assert indexes == SPEC_INDEXES
    assert constraints == [
        ("job_files_job_id_fkey", "c"),
        ("job_logs_job_id_fkey", "c"),
        ("valid_file_type", " "),
        ("valid_status", " "),
    ]
    assert [c[0] for c in columns] == [
        "id", "type", "status", "algorithm", "age_group", "country", "calib_model_type",
        "ensemble", "created_at", "started_at", "completed_at", "error", "result",
        "input_file_path",
    ]  # fmt: skip
    assert ("country", "character varying", 100, "YES") in columns
    assert ("created_at", "timestamp without time zone", None, "NO") in columns


def test_uuid_generate_v4_exists_with_or_without_the_uuid_ossp_extension(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "INSERT INTO jobs (type) VALUES ('openva') RETURNING id, status, ensemble, error, result"
    ).fetchone()
    assert row is not None
    assert row[0].version == 4
    assert row[1:] == ("pending", False, {}, {})


def test_tables_the_dashboard_created_by_hand_are_adopted_not_recreated(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    first = next(m for m in migrations() if m.version == 1)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(first.sql.encode())  # what the dashboard's README tells people to run
        conn.execute("INSERT INTO jobs (type, status) VALUES ('openva', 'failed')")

    result = cli("init-db", "--dsn", empty_dsn)

    assert result.exit_code == 0, result.output
    assert "adopted the existing tables as 001_initial_schema.sql" in result.stdout
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
        adopted = conn.execute(
            "SELECT adopted FROM comsa_migrate.schema_migrations WHERE version = 1"
        ).fetchone()
        assert adopted == (True,)
    assert cli("backfill", sample_tree, "--dsn", empty_dsn).exit_code == 0


def test_a_partial_set_of_dashboard_tables_is_refused(cli: Any, empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id uuid PRIMARY KEY)")

    result = cli("init-db", "--dsn", empty_dsn)

    assert result.exit_code == 2
    assert "not job_files, job_logs" in result.stderr
    assert "Traceback" not in result.output


def test_an_applied_migration_whose_file_changed_is_refused(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("UPDATE comsa_migrate.schema_migrations SET checksum = 'f00d' WHERE version = 1")

    init = cli("init-db", "--dsn", dsn)
    backfill = cli("backfill", sample_tree, "--dsn", dsn)

    for result in (init, backfill):
        assert result.exit_code == 2
        assert "001_initial_schema.sql was changed after it was applied" in result.stderr
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_a_database_migrated_by_a_newer_version_is_refused(
    cli: Any, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO comsa_migrate.schema_migrations (version, name, checksum)"
        " VALUES (999, 'future', 'x')"
    )

    result = cli("init-db", "--dsn", dsn)

    assert result.exit_code == 2
    assert "upgrade comsa-migrate" in result.stderr


def test_backfill_applies_pending_migrations_itself_and_says_so(
    cli: Any, empty_dsn: str, sample_tree: Path
) -> None:
    result = cli("backfill", sample_tree, "--dsn", empty_dsn)

    assert result.exit_code == 0, result.output
    names = ", ".join(m.file_name for m in migrations())
    assert f"migrations applied {names}" in " ".join(result.stdout.split())
