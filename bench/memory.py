"""Peak memory of a backfill on one large upload or one large job JSON.

    python -m bench.memory upload --mb 200     # one job with a 200 MB upload, mirrored
    python -m bench.memory json --mb 100       # one job whose JSON is 100 MB (its log)
    python -m bench.memory json --mb 100 --shape result   # ... or its result
    python -m bench.memory upload --mb 200 --embedded      # an embedded PostgreSQL

Each measure generates its tree in a temporary folder, backfills it into a fresh
database (with the dashboard's job_input_files) in a child process, and prints that
child's peak RSS (VmHWM, see bench/peak.py) beside the peak of the same backfill of an
ordinary job: the difference is what the large file costs. The upload's content is then
checked in the database: the SHA-256 of job_input_files.content_b64 against the SHA-256
of the file's base64, computed here a chunk at a time.
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
        small = _tree(Path(scratch) / "small" / "data", args.kind, 0, args.shape)
        large = _tree(Path(scratch) / "large" / "data", args.kind, args.mb * MIB, args.shape)
        size = _large_file(large, args.kind).stat().st_size
        print(f"{args.kind} of {size / MIB:,.0f} MiB ({size:,} bytes), shape {args.shape}")
        for label, data_dir in (("ordinary job", small), (f"{args.kind} of {args.mb} MB", large)):
            for _ in range(args.repeat):
                peak, failure = _measure(admin_dsn, data_dir, args.kind)
                extra = "" if data_dir is small else f"   {peak * 1024 / size:.2f}x the file"
                print(f"  peak RSS, {label:<22}{peak / 1024:>8.0f} MiB{extra}{failure}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("kind", choices=["upload", "json"])
    parser.add_argument("--mb", type=int, default=200, help="size of the large file in MiB")
    parser.add_argument(
        "--shape", choices=["log", "result"], default="log", help="what makes a JSON large"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="a role that may CREATE DATABASE")
    parser.add_argument("--embedded", action="store_true", help="a throwaway embedded server")
    return parser


def _measure(admin_dsn: str, data_dir: Path, kind: str) -> tuple[int, str]:
    """Backfill ``data_dir`` into a fresh database in a child: its peak RSS in KiB, and
    why it failed ("" when the job and its upload are in the database as they should be)."""
    with database(admin_dsn) as dsn, tempfile.TemporaryDirectory() as scratch:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_input_files_table(conn)
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
            return peak, f"   FAILED (exit {proc.returncode}): {lines[0]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            return peak, _check(conn, data_dir)


def _check(conn: psycopg.Connection[tuple[object, ...]], data_dir: Path) -> str:
    jobs = conn.execute("SELECT count(*) FROM jobs WHERE id = %s", [JOB]).fetchone()
    if jobs != (1,):
        return "   FAILED: the job is not in the database"
    upload = _large_file(data_dir, "upload")
    row = conn.execute(
        "SELECT encode(sha256(convert_to(content_b64, 'SQL_ASCII')), 'hex')"
        " FROM job_input_files WHERE job_id = %s AND filename = %s",
        [JOB, upload.name],
    ).fetchone()
    if row is None or row[0] != _b64_sha256(upload):
        return f"   FAILED: job_input_files holds other content than {upload.name}"
    return "   content identical (SHA-256 of the base64)"


def _b64_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(3 * MIB):  # a multiple of 3: the pieces join without padding
            digest.update(base64.b64encode(chunk))
    return digest.hexdigest()


def _tree(data_dir: Path, kind: str, size: int, shape: str) -> Path:
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


def _job(rng: random.Random, size: int, shape: str) -> dict[str, object]:
    """A completed job; its log (or its result) makes its JSON about ``size`` bytes."""
    doc: dict[str, object] = {
        "id": JOB,
        "type": "pipeline",
        "status": "completed",
        "algorithm": "InterVA",
        "age_group": "neonate",
        "country": "Mozambique",
        "created_at": "2025-06-01 10:00:00",
        "started_at": "2025-06-01 10:00:01",
        "completed_at": "2025-06-01 10:00:09",
        "error": {},
        "input_file": f"data/uploads/{JOB}/input.csv",
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


def _large_file(data_dir: Path, kind: str) -> Path:
    if kind == "upload":
        return data_dir / "uploads" / JOB / "input.csv"
    return data_dir / "jobs" / f"{JOB}.json"


if __name__ == "__main__":
    raise SystemExit(main())
