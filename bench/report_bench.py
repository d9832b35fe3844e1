"""Benchmark the dry-run report against the backfill it plans, on the same generated tree.

    python -m bench.report_bench --jobs 20000
    python -m bench.report_bench --jobs 20000 --repeat 3 --tree /var/tmp/tree20k

Measures, each the wall-clock time of one child process (the CLI, as a user runs it):

    (b)  cold backfill into a fresh migrated database
    (r)  report with a database, on a fresh migrated database    target: r <= b
    (c)  rerun of the backfill on the unchanged tree
    (w)  report with a database after the backfill (every job unchanged, full drift pass)
    (o)  report --offline                                        target: o <= c + p
    (p)  what parsing adds to the backfill's pass: its own preparation of every job
         (PreparedBatches without a database: read, normalise, serialise) minus
         the bare scan, which (c) already counts; timed inside one process

The tree comes from bench.generate (the same generator as bench.run) and is read once
before measuring, so every measure runs on a warm page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from comsa_migrate.core import tree
from comsa_migrate.core.plan import Recorder, batches, prepare
from comsa_migrate.db.target import redact
from comsa_migrate.pipeline.options import WriteOptions

from .bytecode import compile_project
from .generate import TreeShape, generate
from .servers import DEFAULT_DSN, database

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "b": "(b) cold backfill",
    "r": "(r) report, fresh database",
    "c": "(c) backfill rerun, unchanged",
    "w": "(w) report after the backfill",
    "o": "(o) report --offline",
    "p": "(p) parsing in the backfill's pass",
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "parse":
        print(orjson.dumps({"seconds": _parse_all(args.data_dir)}).decode())
        return 0
    compile_project()
    with _tree(args) as data_dir:
        _warm(data_dir)
        print(f"tree of {args.jobs} jobs; server {redact(args.dsn)}; {os.cpu_count()} CPUs")
        rounds = [_round(args.dsn, data_dir) for _ in range(args.repeat)]
    medians = {key: statistics.median(r[key] for r in rounds) for key in LABELS}
    minima = {key: min(r[key] for r in rounds) for key in LABELS}
    print(f"\n{args.repeat} round(s)                           median       best")
    for key, label in LABELS.items():
        print(f"  {label:<36} {medians[key]:8.2f} s {minima[key]:8.2f} s")
    for name, values in (("median", medians), ("best", minima)):
        b, r, c, o, p = (values[k] for k in "brcop")
        print(f"\n  {name}: r / b = {r / b:.2f}, o / (c + p) = {o / (c + p):.2f}  (targets <= 1)")
    if args.json:
        args.json.write_bytes(
            orjson.dumps({"jobs": args.jobs, "rounds": rounds, "median": medians, "best": minima})
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report_bench")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "parse"])
    parser.add_argument("data_dir", nargs="?", type=Path, help="(parse) the tree to parse")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the tree (20000)")
    parser.add_argument("--seed", type=int, default=20_000, help="generator seed (20000)")
    parser.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="a role that may CREATE DATABASE; each round gets two fresh databases",
    )
    parser.add_argument("--tree", type=Path, help="generate the tree here and keep it")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (1)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser


def _round(admin_dsn: str, data_dir: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    cli = ["-m", "comsa_migrate"]
    with database(admin_dsn) as backfilled, database(admin_dsn) as untouched:
        backfill = [*cli, "backfill", str(data_dir), "--dsn", backfilled, "-q"]
        report = [*cli, "report", str(data_dir), "--format", "json", "-o", os.devnull, "-q"]
        times["r"] = _timed([*report, "--dsn", untouched])
        times["b"] = _timed(backfill)
        times["c"] = _timed(backfill)
        times["w"] = _timed([*report, "--dsn", backfilled])
        times["o"] = _timed([*report, "--offline"])
    child = subprocess.run(
        [sys.executable, "-m", "bench.report_bench", "parse", str(data_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    times["p"] = float(orjson.loads(child.stdout)["seconds"])
    for key in LABELS:
        print(f"  {LABELS[key]:<36} {times[key]:8.2f} s")
    return times


def _timed(args: list[str]) -> float:
    """Wall-clock seconds of ``python ARGS``; exit 0 or 1 (the report's verdict) is fine."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True)
    elapsed = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args[:3])} failed: {completed.stderr.decode()[-500:]}")
    return elapsed


def _parse_all(data_dir: Path) -> float:
    """What parsing adds to the backfill's own pass: its preparation minus the scan.

    Preparing without a database reads, normalises and serialises every job
    in the scan's batches, exactly as a cold backfill prepares them; the scan alone is
    timed too and taken off, since the rerun (c) already pays for it. Best of two.
    """
    scans, passes = [], []
    for _ in range(2):
        started = time.perf_counter()
        for _item in tree.scan(data_dir):
            pass
        scans.append(time.perf_counter() - started)
        started = time.perf_counter()
        write = WriteOptions()
        reading = write.reading(data_dir, write.settings(None))
        told = Recorder()
        for batch in batches(tree.scan(data_dir), write.batch_size, told):
            prepare(reading, batch, set(), told)
            told.take()
        passes.append(time.perf_counter() - started)
    return min(passes) - min(scans)


@contextlib.contextmanager
def _tree(args: argparse.Namespace) -> Iterator[Path]:
    if args.tree is not None:
        if not (args.tree / "jobs").is_dir():
            generate(args.tree, TreeShape(args.jobs, seed=args.seed))
        yield args.tree
        return
    with tempfile.TemporaryDirectory(prefix="comsa-report-bench-") as scratch:
        yield generate(Path(scratch) / "data", TreeShape(args.jobs, seed=args.seed))


def _warm(data_dir: Path) -> None:
    """Read every file once, so that no measure pays for the first read from disk."""
    for path in data_dir.rglob("*"):
        if path.is_file():
            path.read_bytes()


if __name__ == "__main__":
    sys.exit(main())
