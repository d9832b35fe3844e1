"""The two baselines the backfill is compared with: a bulk COPY and a bare walk.

Run as a child process of ``bench.run``: ``python -m bench.baselines copy DATA_DIR DSN``
or ``python -m bench.baselines walk DATA_DIR``. Each prints one JSON line with its
elapsed seconds and counts, timed from the first file-system call to the commit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson

__all__ = ["bare_walk", "copy_lower_bound", "copy_rows"]

_EPOCH = datetime(1970, 1, 1)
_LOG_STEP = timedelta(microseconds=1)
JOB_COLUMNS = (
    "id",
    "type",
    "status",
    "algorithm",
    "age_group",
    "country",
    "calib_model_type",
    "ensemble",
    "created_at",
    "started_at",
    "completed_at",
    "error",
    "result",
    "input_file_path",
)


def bare_walk(data_dir: str) -> dict[str, int]:
    """Stat every file under jobs/, uploads/ and outputs/: the least a rerun must do."""
    files = 0
    stack = [os.path.join(data_dir, folder) for folder in ("jobs", "uploads", "outputs")]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    files += 1
    return {"files": files}


def copy_lower_bound(data_dir: str, dsn: str) -> dict[str, int]:
    """Walk, parse every JSON with orjson, stat the files, and COPY every row in one transaction.

    No validation and no bookkeeping: the least work that puts the same rows in the tables
    as the backfill does (on a well-formed tree such as bench.generate writes).
    """
    import psycopg  # here, so that the bare walk's process does not pay for the import

    with psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        counts = copy_rows(conn, data_dir)
        conn.commit()
    return counts


def copy_rows(conn: Any, data_dir: str) -> dict[str, int]:
    """The COPYs of copy_lower_bound(), in the connection's current transaction.

    Job rows stream to the server as they are read; log and file rows wait in memory for
    their own COPY, which may only start once the jobs they reference are in.
    """
    logs: list[tuple[str, str, str]] = []
    files: list[tuple[str, str, str, str, int, str]] = []
    jobs = 0
    with conn.cursor() as cur:
        with cur.copy(f"COPY public.jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
            for job_row in _job_rows(data_dir, logs, files):
                copy.write_row(job_row)
                jobs += 1
        with cur.copy("COPY public.job_logs (job_id, timestamp, message) FROM STDIN") as copy:
            for log_row in logs:
                copy.write_row(log_row)
        with cur.copy(
            "COPY public.job_files"
            " (job_id, file_type, file_name, file_path, file_size, created_at) FROM STDIN"
        ) as copy:
            for file_row in files:
                copy.write_row(file_row)
    return {"jobs": jobs, "job_logs": len(logs), "job_files": len(files)}


def _job_rows(
    data_dir: str,
    logs: list[tuple[str, str, str]],
    files: list[tuple[str, str, str, str, int, str]],
) -> Iterator[tuple[Any, ...]]:
    with os.scandir(os.path.join(data_dir, "jobs")) as it:
        for entry in it:
            if not entry.name.endswith(".json"):
                continue
            job_id = entry.name[:-5]
            entry.stat(follow_symlinks=False)
            with open(entry.path, "rb") as fh:
                doc = orjson.loads(fh.read())
            previous = None
            for line in doc.get("log") or ():
                # each line whole, stamped by its prefix, one microsecond apart within a second
                moment = datetime.fromisoformat(line[1:20])
                if previous is not None and moment <= previous:
                    moment = previous + _LOG_STEP
                logs.append((job_id, moment.isoformat(sep=" "), line))
                previous = moment
            for folder, file_type in (("uploads", "input"), ("outputs", "output")):
                _stat_files(data_dir, folder, file_type, job_id, files)
            yield _job_row(job_id, doc)


def _job_row(job_id: str, doc: dict[str, Any]) -> tuple[Any, ...]:
    error = doc.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    algorithm = doc.get("algorithm")
    if isinstance(algorithm, list):
        algorithm = algorithm[0]
    input_file = doc.get("input_file")
    return (
        job_id,
        doc["type"],
        doc["status"],
        algorithm,
        doc.get("age_group"),
        doc.get("country"),
        doc.get("calib_model_type"),
        bool(doc.get("ensemble")),
        doc["created_at"],
        doc.get("started_at"),
        doc.get("completed_at"),
        orjson.dumps(error).decode(),
        orjson.dumps(doc.get("result") or {}).decode(),
        input_file,  # data/uploads/...: as the dashboard writes it, and the legacy JSON holds it
    )


def _stat_files(
    data_dir: str,
    folder: str,
    file_type: str,
    job_id: str,
    files: list[tuple[str, str, str, str, int, str]],
) -> None:
    try:
        it = os.scandir(os.path.join(data_dir, folder, job_id))
    except FileNotFoundError:
        return
    with it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            modified = (_EPOCH + timedelta(microseconds=st.st_mtime_ns // 1000)).isoformat()
            rel = f"data/{folder}/{job_id}/{entry.name}"  # from the dashboard's backend/
            files.append((job_id, file_type, entry.name, rel, st.st_size, modified))


def main(argv: list[str]) -> int:
    kind, data_dir, *rest = argv
    started = time.perf_counter()
    counts = copy_lower_bound(data_dir, rest[0]) if kind == "copy" else bare_walk(data_dir)
    elapsed = time.perf_counter() - started
    sys.stdout.write(orjson.dumps({"elapsed": elapsed, **counts}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
