"""Putting a tree's files in the `db` file store as a backfill with --file-store db does
(contents by sha256, one comsa_migrate.stored_files row per file), rows inserted as the
dashboard inserts them, and the dashboard's tables read back row for row."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core.layout import is_job_id, job_id_of_json
from comsa_migrate.file_store import CHUNK_SIZE
from comsa_migrate.file_store.database import DatabaseStore

#: the dashboard's tables and the columns a copy must have equal (serial ids, and
#: job_input_files.created_at, the time of the insert, left out)
TABLES = {
    "jobs": "id, type, status, algorithm, age_group, country, calib_model_type, ensemble,"
    " created_at, started_at, completed_at, error, result, input_file_path",
    "job_logs": "job_id, timestamp, message",
    "job_files": "job_id, file_type, file_name, file_path, file_size, created_at",
    "job_input_files": "job_id, filename, content_b64",
}


def store_file(dsn: str, job_id: str, path: str, content: bytes, mtime_ns: int) -> str:
    """Put ``content`` in the db store and record it as ``path`` of ``job_id``."""
    digest = hashlib.sha256(content).hexdigest()
    chunks = [content[i : i + CHUNK_SIZE] for i in range(0, len(content), CHUNK_SIZE)] or [b""]
    with psycopg.connect(dsn, autocommit=True) as conn:
        DatabaseStore(conn).put(digest, len(content), chunks)
        conn.execute(
            "INSERT INTO comsa_migrate.stored_files (job_id, path, sha256, size, mtime_ns)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id, path) DO UPDATE SET"
            " sha256 = EXCLUDED.sha256, size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,"
            " on_disk = true, stored_at = now()",
            (job_id, path, digest, len(content), mtime_ns),
        )
    return digest


def store_tree(dsn: str, data_dir: Path) -> dict[str, bytes]:
    """Store every file of every job of ``data_dir`` (its JSON, uploads and outputs; no
    link followed); returns {path: content} of what was stored."""
    stored: dict[str, bytes] = {}
    for path in sorted(_files(data_dir)):
        relative = path.relative_to(data_dir).as_posix()
        folder, name = relative.split("/")[:2]
        job_id = job_id_of_json(name) if folder == "jobs" else name.lower()
        if job_id is None or not is_job_id(job_id):
            continue
        content = path.read_bytes()
        store_file(dsn, job_id, relative, content, os.lstat(path).st_mtime_ns)
        stored[relative] = content
    return stored


def _files(data_dir: Path) -> list[Path]:
    found = []
    for folder in ("jobs", "uploads", "outputs"):
        for root, _dirs, files in os.walk(data_dir / folder):
            for name in files:
                path = Path(root) / name
                if stat.S_ISREG(os.lstat(path).st_mode) and (
                    folder != "jobs" or root == str(data_dir / "jobs")
                ):
                    found.append(path)
    return found


def tree_files(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file under ``data_dir``: {relative path: (content, mtime_ns)}."""
    return {
        path.relative_to(data_dir).as_posix(): (path.read_bytes(), os.lstat(path).st_mtime_ns)
        for path in _files(data_dir)
    }


def table_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """The dashboard's tables, row for row, in a stable order (job_input_files if it exists)."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, columns in TABLES.items():
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
            if exists and exists[0]:
                query = f"SELECT {columns} FROM public.{table}"  # noqa: S608 - fixed names
                rows[table] = sorted(
                    conn.execute(query).fetchall(), key=lambda r: tuple(map(str, r))
                )
    return rows


def insert_as_dashboard(dsn: str, job: dict[str, Any]) -> None:
    """A job as the database-backed dashboard writes it (its backend/db/connection.R):
    save_job()'s insert (error and result "{}", created_at to the second), add_job_file()
    and save_input_file() for its upload, update_job_status() (NOW() for started_at and
    completed_at; error {"message": ...}, or NULL once completed), add_log() (no prefix,
    NOW()), add_job_file() for each output, update_job_result()."""
    job_id = job["id"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, type, status, algorithm, age_group, country,"
            " calib_model_type, ensemble, created_at, started_at, completed_at, error,"
            " result, input_file_path) VALUES (%s::uuid, %s, 'pending', %s, %s, %s,"
            " %s, %s, date_trunc('second', now()) - interval '1 hour', NULL, NULL,"
            " '{}'::jsonb, '{}'::jsonb, %s)",
            [
                job_id,
                job["type"],
                job["algorithm"][0],
                job.get("age_group"),
                job.get("country"),
                job.get("calib_model_type"),
                job.get("ensemble", False),
                job.get("input_file"),
            ],
        )
        for name, content in job.get("inputs", {}).items():
            path = f"data/uploads/{job_id}/{name}"
            conn.execute(
                "INSERT INTO job_files (job_id, file_type, file_name, file_path, file_size)"
                " VALUES (%s, 'input', %s, %s, %s)",
                [job_id, name, path, len(content)],
            )
            conn.execute(
                "INSERT INTO job_input_files (job_id, filename, content_b64) VALUES (%s, %s, %s)"
                " ON CONFLICT (job_id, filename) DO UPDATE SET content_b64 = EXCLUDED.content_b64",
                [job_id, name, base64.b64encode(content).decode()],
            )
        if job["status"] == "pending":
            return
        conn.execute(
            "UPDATE jobs SET status = 'running', started_at = NOW() WHERE id = %s", [job_id]
        )
        for message in job.get("log", []):
            conn.execute(
                "INSERT INTO job_logs (job_id, message, timestamp) VALUES (%s, %s, NOW())",
                [job_id, message],
            )
        for name, content in job.get("outputs", {}).items():
            conn.execute(
                "INSERT INTO job_files (job_id, file_type, file_name, file_path, file_size)"
                " VALUES (%s, 'output', %s, %s, %s)",
                [job_id, name, f"data/outputs/{job_id}/{name}", len(content)],
            )
        if job["status"] == "failed":
            conn.execute(
                "UPDATE jobs SET status = 'failed', completed_at = NOW(),"
                " error = %s::jsonb WHERE id = %s",
                [json.dumps({"message": job["error"]}), job_id],
            )
            return
        conn.execute(
            "UPDATE jobs SET result = %s::jsonb WHERE id = %s", [json.dumps(job["result"]), job_id]
        )
        conn.execute(
            "UPDATE jobs SET status = 'completed', completed_at = NOW(), error = NULL"
            " WHERE id = %s",
            [job_id],
        )


def sidecar_bytes(job: dict[str, Any]) -> bytes:
    """The sidecar save_job_metadata() writes: write_json(auto_unbox = TRUE, pretty = TRUE)."""
    fields = ("algorithm", "use_sample_data", "demo_id", "demo_name", "n_mcmc", "n_burn")
    fields += ("n_thin",)
    doc = {k: job[k] for k in fields if job.get(k) not in (None, [])}
    doc["id"] = job["id"]
    if len(doc["algorithm"]) == 1:
        doc["algorithm"] = doc["algorithm"][0]
    return json.dumps(doc, indent=2).encode()
