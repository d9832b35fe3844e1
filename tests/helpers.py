"""Small helpers the tests share: row counts and a digest that any write changes."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        for table in ("jobs", "job_logs", "job_files")
    }


def row_digest(conn: psycopg.Connection[Any]) -> str:
    """One digest of every row, system columns included: any write changes it."""
    row = conn.execute(
        "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ("
        " SELECT xmin::text || ctid::text || j::text AS t FROM jobs j"
        " UNION ALL SELECT xmin::text || ctid::text || l::text FROM job_logs l"
        " UNION ALL SELECT xmin::text || ctid::text || f::text FROM job_files f) rows"
    ).fetchone()
    assert row is not None
    return str(row[0])


def write_job(
    data_dir: Path, job_id: str, doc: dict[str, Any] | None = None, **fields: Any
) -> Path:
    """Write jobs/<job_id>.json the way the legacy backend did (compact JSON)."""
    body = dict(doc) if doc is not None else _sample_job(job_id)
    body.update(fields)
    path = data_dir / "jobs" / f"{job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(body))
    return path


def make_tree(data_dir: Path, n_jobs: int) -> list[str]:
    """A legacy tree of ``n_jobs`` sample-shaped jobs, each with logs and two output files."""
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(n_jobs)]
    for job_id in ids:
        write_job(data_dir, job_id)
        out = data_dir / "outputs" / job_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "causes.csv").write_text("cause,n\nMalaria,3\nHIV,1\n")
        (out / "calibration_summary.csv").write_text("cause,csmf\nMalaria,0.75\n")
    (data_dir / "uploads").mkdir(exist_ok=True)
    return ids


def _sample_job(job_id: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "pipeline",
        "status": "completed",
        "algorithm": "InterVA",
        "age_group": "neonate",
        "country": "Mozambique",
        "created_at": "2025-12-30 23:10:53",
        "started_at": "2025-12-30 23:10:55",
        "completed_at": "2025-12-30 23:11:17",
        "error": {},
        "result": {"n_records": 81, "openva_csmf": {"Prematurity": 0.0123, "Birth asphyxia": 0.72}},
        "log": [f"[2025-12-30 23:10:{55 + i % 5:02d}] step {i}" for i in range(10)],
    }


def age_tree(data_dir: Path, seconds: float = 3600) -> None:
    """Move every mtime into the past, so that fingerprints are trusted (not racy)."""
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def stored_contents(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every job's rows in canonical form (serial ids left out), keyed by job id."""
    rows = conn.execute("SELECT id::text, comsa_migrate.stored_content(id) FROM jobs").fetchall()
    return dict(rows)


def job_counts(stdout: str) -> tuple[int, ...]:
    """(inserted, updated, unchanged, skipped, conflicts) from a backfill's summary."""
    words = " ".join(stdout.split())
    match = re.search(
        r"(\d+) inserted, (\d+) updated, (\d+) unchanged, (\d+) skipped, (\d+) conflicts", words
    )
    assert match is not None, stdout
    return tuple(int(n) for n in match.groups())
