"""The database's disk fills up mid-run: the run stops with one line that names the disk,
and once there is room again a rerun writes exactly what one clean run writes.

The tables live in a tablespace on a small tmpfs that the test mounts (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.errors import EXIT_STOPPED

from .conftest import Databases, clean_run_of
from .helpers import (
    finish,
    job_counts,
    running_daemon,
    spawn_backfill,
    stored_contents,
    table_counts,
    wait_until,
)

JOBS = 400
TABLES = ("public.jobs", "public.job_logs", "public.job_files", "comsa_migrate.job_state")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounts a small tmpfs: needs root",
)


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("disk") / "data", TreeShape(JOBS))


@pytest.fixture(scope="module")
def clean_run(generated_tree: Path, databases: Databases, template_db: str) -> Any:
    """What one backfill writes with room enough: (contents, row counts)."""
    with clean_run_of(databases, template_db, generated_tree) as reference:
        yield reference


@pytest.fixture
def small_disk(dsn: str) -> Iterator[Path]:
    """The test database's tables on a tmpfs of 512 KiB; the mount point, to grow it."""
    base = Path(tempfile.mkdtemp(prefix="comsa-disk-"))
    base.chmod(0o755)  # the server's own user walks into it
    mount = base / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    name = f"comsa_small_{base.name.split('-')[-1]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            server_data = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
            owner = Path(server_data).stat()
            os.chown(mount, owner.st_uid, owner.st_gid)
            conn.execute(f"CREATE TABLESPACE {name} LOCATION '{mount}'")
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} SET TABLESPACE {name}")
        yield mount
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
            conn.execute(f"DROP TABLESPACE IF EXISTS {name}")
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_converges(
    generated_tree: Path, dsn: str, small_disk: Path, clean_run: Any
) -> None:
    contents, counts = clean_run

    full = spawn_backfill(generated_tree, "--dsn", dsn)
    stdout, stderr = full.communicate(timeout=180)

    assert full.returncode == EXIT_STOPPED, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("comsa-migrate: error")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("comsa-migrate: error: the database is out of disk space: ")
    assert len(stdout.splitlines()) + len(stderr.splitlines()) <= 40, stdout + stderr
    assert "Traceback" not in stderr
    written = job_counts(stdout)[0]
    assert 0 < written < JOBS
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn)["jobs"] == written, stdout + stderr  # the summary is true

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = finish(spawn_backfill(generated_tree, "--dsn", dsn))

    assert job_counts(rerun)[0] == JOBS - written, (stdout, rerun)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents


@pytest.mark.slow
def test_the_daemon_waits_out_a_full_disk_and_syncs_every_job_once_there_is_room(
    generated_tree: Path,
    dsn: str,
    small_disk: Path,
    clean_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The catch-up meets the full disk: an outage (the jobs stay owed, retried with
    backoff), not thousands of refused jobs; once there is room it finishes."""
    contents, counts = clean_run

    with running_daemon(dsn, generated_tree, ready=False) as daemon:
        wait_until(lambda: daemon.stats()["outages"] >= 1, 60, "the outage")
        assert not daemon.ready.is_set()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        wait_until(daemon.ready.is_set, 120, "the catch-up to finish")
        assert daemon.stats()["errors"] == 0

    assert caplog.text.count("the database is out of disk space") == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_counts(conn) == counts
        assert stored_contents(conn) == contents
