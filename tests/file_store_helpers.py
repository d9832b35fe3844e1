"""What the file store tests read back: stored_files rows and contents, by path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.file_store import open_file_store

from .helpers import new_job_id, write_job_atomically


def stored_rows(dsn: str) -> dict[str, tuple[str, int, bool]]:
    """path -> (sha256, size, on_disk) of every stored_files row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT path, sha256, size, on_disk FROM comsa_migrate.stored_files"
        ).fetchall()
    return {path: (sha, size, on_disk) for path, sha, size, on_disk in rows}


def stored_at(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT path, stored_at FROM comsa_migrate.stored_files").fetchall()
    return dict(rows)


def content_of(dsn: str, sha256: str, url: str = "db") -> bytes:
    store = open_file_store(url, lambda: psycopg.connect(dsn, autocommit=True))
    try:
        return b"".join(store.read(sha256))
    finally:
        store.close()


def files_on_disk(data: Path) -> dict[str, bytes]:
    """DATA_DIR-relative path -> bytes of every file of the tree's jobs (no hidden ones)."""
    found: dict[str, bytes] = {}
    for folder in ("jobs", "uploads", "outputs"):
        for path in sorted((data / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(data).as_posix()] = path.read_bytes()
    return found


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_sidecar(data: Path, job_id: str) -> Path:
    """The metadata sidecar the newest dashboard writes for its own job (no type, no status)."""
    path = data / "jobs" / f"{job_id}.json"
    doc = {"id": job_id, "algorithm": ["InSilicoVA", "InterVA"], "n_mcmc": 5000, "n_burn": 2000}
    path.write_text(json.dumps(doc))
    return path


def insert_dashboard_job(dsn: str, job_id: str) -> None:
    """A job row as the dashboard's backend inserts it for its own job: no job_state row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, type, status, algorithm, created_at)"
            " VALUES (%s, 'pipeline', 'running', 'InSilicoVA', now())",
            [job_id],
        )


def dashboard_row(dsn: str, job_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT type, status, algorithm, created_at FROM jobs WHERE id = %s", [job_id]
        ).fetchone()


def age(path: Path, seconds: float = 3600) -> None:
    """Make a file's mtime older, out of the racy window of the scan."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def job_with_outputs(data: Path, files: dict[str, bytes]) -> str:
    """A new job in ``data`` with these output files; its id."""
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    (data / "outputs" / job_id).mkdir()
    for name, content in files.items():
        (data / "outputs" / job_id / name).write_bytes(content)
    return job_id
