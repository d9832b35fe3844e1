"""Peak memory of a backfill on large files: one large upload, one large job JSON, or
many jobs that each have a medium upload.

    python -m bench.memory upload --mb 200     # one job with a 200 MB upload, mirrored
    python -m bench.memory json --mb 100       # one job whose JSON is 100 MB (its log)
    python -m bench.memory json --mb 100 --shape result   # ... or its result
    python -m bench.memory uploads --jobs 2000 --kb 300    # many jobs, each a medium upload
    python -m bench.memory upload --mb 200 --embedded      # an embedded PostgreSQL

Each measure generates its tree in a temporary folder, backfills it into a fresh
database (with the dashboard's job_input_files) in a child process, and prints that
child's peak RSS (VmHWM, see bench/peak.py) and what it adds to the peak of the same
backfill of an ordinary job: what the large file costs, also as a multiple of its size.
The upload's content is then checked in the database: the SHA-256 of
job_input_files.content_b64 against the SHA-256 of the file's base64, computed here a
chunk at a time. ``uploads`` prints the peak and the wall time of one backfill of its
tree, and checks every upload by its md5.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg

from comsa_migrate.db.migrations import create_input_files_table

from .run import ROOT
from .servers import DEFAULT_DSN, database, server

JOB = "7e5f0c1a-0000-4000-8000-00000000b16f"
MTIME_NS = 1_750_000_000 * 1_000_000_000  # months in the past: no fingerprint is racy
MIB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with (
        server(args.embedded, args.dsn) as admin_dsn,
        tempfile.TemporaryDirectory(prefix="comsa-bench-memory-") as scratch,
    ):
        if args.kind == "uploads":
            _many_uploads(admin_dsn, Path(scratch) / "data", args)
            return 0
        small = tree(Path(scratch) / "small" / "data", args.kind, 0, args.shape)
        large = tree(Path(scratch) / "large" / "data", args.kind, args.mb * MIB, args.shape)
        size = large_file(large, args.kind).stat().st_size
        print(f"{args.kind} of {size / MIB:,.0f} MiB ({size:,} bytes), shape {args.shape}")
        base = None
        for label, data_dir in (("ordinary job", small), (f"{args.kind} of {args.mb} MiB", large)):
            for _ in range(args.repeat):
                started = time.perf_counter()
                peak, checked = _measure(admin_dsn, data_dir)
                seconds = time.perf_counter() - started
                line = f"  {label:<20}{seconds:6.1f} s, peak RSS {peak / 1024:>5.0f} MiB"
                if base is not None:
                    growth = (peak - base) * 1024
                    line += f"  (+{growth / MIB:.0f} MiB: {growth / size:.2f}x the file)"
                print(f"{line}   {checked}")
            base = peak if base is None else base
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("kind", choices=["upload", "json", "uploads"])
    parser.add_argument("--mb", type=int, default=200, help="size of the large file in MiB")
    parser.add_argument("--jobs", type=int, default=2000, help="uploads: how many jobs")
    parser.add_argument("--kb", type=int, default=300, help="uploads: KiB of each one's upload")
    parser.add_argument(
        "--shape", choices=["log", "result"], default="log", help="what makes a JSON large"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="a role that may CREATE DATABASE")
    parser.add_argument("--embedded", action="store_true", help="a throwaway embedded server")
    return parser


def _many_uploads(admin_dsn: str, data_dir: Path, args: argparse.Namespace) -> None:
    """Jobs that each have a medium upload: the peak, and the wall time of the backfill."""
    ids = [str(uuid.UUID(int=n + 1, version=4)) for n in range(args.jobs)]
    rng = random.Random(args.kb)
    (data_dir / "jobs").mkdir(parents=True)
    for job_id in ids:
        upload = data_dir / "uploads" / job_id / "input.csv"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(rng.randbytes(args.kb * 1024))
        doc = orjson.dumps(_job(rng, 0, "log", job_id))
        (data_dir / "jobs" / f"{job_id}.json").write_bytes(doc)
        for path in (upload, upload.parent, data_dir / "jobs" / f"{job_id}.json"):
            os.utime(path, ns=(MTIME_NS, MTIME_NS))
    print(f"{args.jobs:,} jobs, each with an upload of {args.kb:,} KiB")
    expected = hashlib.md5(usedforsecurity=False)
    for job_id in ids:
        b64 = base64.b64encode((data_dir / "uploads" / job_id / "input.csv").read_bytes())
        expected.update(hashlib.md5(b64, usedforsecurity=False).hexdigest().encode())
    for _ in range(args.repeat):
        with database(admin_dsn) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                create_input_files_table(conn)
            started = time.perf_counter()
            peak, failure = backfill_peak(dsn, data_dir, check=False)
            seconds = time.perf_counter() - started
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT md5(string_agg(md5(content_b64), '' ORDER BY job_id))"
                    " FROM job_input_files"
                ).fetchone()
        same = row is not None and row[0] == expected.hexdigest()
        checked = failure or ("every upload identical" if same else "FAILED: other content")
        print(f"  peak RSS {peak / 1024:>5.0f} MiB, {seconds:6.2f} s   {checked}")


def _measure(admin_dsn: str, data_dir: Path) -> tuple[int, str]:
    """Backfill ``data_dir`` into a fresh database (with job_input_files) in a child."""
    with database(admin_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_input_files_table(conn)
        return backfill_peak(dsn, data_dir)


def backfill_peak(dsn: str, data_dir: Path, *, check: bool = True) -> tuple[int, str]:
    """Backfill ``data_dir`` into ``dsn`` in a child process: its peak RSS in KiB, and what
    became of the job and its upload in the database (or why the backfill failed)."""
    with tempfile.TemporaryDirectory(prefix="comsa-bench-peak-") as scratch:
        limit = str(1024 * MIB)
        peak_file = Path(scratch) / "peak"
        backfill = ["comsa_migrate", "backfill", str(data_dir), "--dsn", dsn, "-q"]
        proc = subprocess.run(
            [sys.executable, "-m", "bench.peak", str(peak_file), *backfill]
            + ["--max-input-bytes", limit, "--max-json-bytes", limit],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        peak = int(peak_file.read_text())
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [""]
        return peak, f"FAILED (exit {proc.returncode}): {lines[0]}"
    if not check:
        return peak, ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return peak, _check(conn, data_dir)


def _check(conn: psycopg.Connection[tuple[object, ...]], data_dir: Path) -> str:
    jobs = conn.execute("SELECT count(*) FROM jobs WHERE id = %s", [JOB]).fetchone()
    if jobs != (1,):
        return "FAILED: the job is not in the database"
    upload = large_file(data_dir, "upload")
    if stored_sha256(conn, upload.name) != b64_sha256(upload):
        return f"FAILED: job_input_files holds other content than {upload.name}"
    return "upload in job_input_files identical (SHA-256 of the base64)"


def stored_sha256(conn: psycopg.Connection[tuple[object, ...]], filename: str) -> str | None:
    """The SHA-256 of the job's job_input_files.content_b64 for ``filename``, by the server."""
    row = conn.execute(
        "SELECT encode(sha256(convert_to(content_b64, 'UTF8')), 'hex')"
        " FROM job_input_files WHERE job_id = %s AND filename = %s",
        [JOB, filename],
    ).fetchone()
    return None if row is None else str(row[0])


def b64_sha256(path: Path) -> str:
    """The SHA-256 of the file's base64, read a few MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(3 * MIB):  # a multiple of 3: the pieces join without padding
            digest.update(base64.b64encode(chunk))
    return digest.hexdigest()


def tree(data_dir: Path, kind: str, size: int, shape: str = "log") -> Path:
    """One job with an upload: the large file is ``size`` bytes of it (0: an ordinary job)."""
    rng = random.Random(size)
    (data_dir / "jobs").mkdir(parents=True)
    upload = data_dir / "uploads" / JOB / "input.csv"
    upload.parent.mkdir(parents=True)
    with upload.open("wb") as fh:
        fh.write(b"ID,age,sex\n")
        if kind == "upload":
            for _ in range(size // MIB):
                fh.write(rng.randbytes(MIB))
    doc = _job(rng, size if kind == "json" else 0, shape)
    (data_dir / "jobs" / f"{JOB}.json").write_bytes(orjson.dumps(doc))
    for path in (upload, upload.parent, data_dir / "jobs" / f"{JOB}.json"):
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return data_dir


def _job(rng: random.Random, size: int, shape: str, job_id: str = JOB) -> dict[str, object]:
    """A completed job; its log (or its result) makes its JSON about ``size`` bytes."""
    doc: dict[str, object] = {
        "id": job_id,
        "type": "pipeline",
        "status": "completed",
        "algorithm": "InterVA",
        "age_group": "neonate",
        "country": "Mozambique",
        "created_at": "2025-06-01 10:00:00",
        "started_at": "2025-06-01 10:00:01",
        "completed_at": "2025-06-01 10:00:09",
        "error": {},
        "input_file": f"data/uploads/{job_id}/input.csv",
        "result": {"n_records": 40},
        "log": ["[2025-06-01 10:00:01] Starting pipeline"],
    }
    line = "[2025-06-01 10:00:05] record {:>9}: cause assigned, likelihood {:.6f} ({})"
    causes = ("Malaria", "Neonatal sepsis", "Prematurity", "Birth asphyxia")
    lines: list[str] = []
    total = 0
    while total < size:
        text = line.format(len(lines), rng.random(), rng.choice(causes))
        lines.append(text)
        total += len(text) + 3  # the quotes and the comma
    if shape == "log":
        doc["log"] = [*doc["log"], *lines]  # type: ignore[misc]
    else:
        doc["result"] = {"n_records": len(lines), "records": lines}
    return doc


def large_file(data_dir: Path, kind: str) -> Path:
    if kind == "upload":
        return data_dir / "uploads" / JOB / "input.csv"
    return data_dir / "jobs" / f"{JOB}.json"


if __name__ == "__main__":
    raise SystemExit(main())
