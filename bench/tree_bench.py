"""Benchmark restore against `cp -r` of the same tree, and export against the cold backfill
of the same jobs, on one server, in one run.

    python -m bench.tree_bench --jobs 20000
    python -m bench.tree_bench --jobs 2000 --embedded

Measures (each the wall time of one child process, so each pays its interpreter start):

    (b)  cold backfill, plain, into a fresh database
    (bs) cold backfill with --file-store db (the database the rest reads)
    (e)  export of every job into an empty folder
    (r)  restore of every stored file into an empty folder (--fsync end, the default)
    (re) the same with --fsync each
    (rn) the same with --fsync none
    (cp) cp -r of the original tree (no fsync)

The targets: e/b <= 1 (issue #20); r/cp is what durability and the database cost.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .generate import TreeShape, generate
from .run import _child
from .servers import DEFAULT_DSN, database, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tree_bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args(argv)
    with (
        server(args.embedded, args.dsn) as admin_dsn,
        tempfile.TemporaryDirectory(prefix="comsa-bench-tree-") as scratch,
    ):
        home = Path(scratch)
        tree = generate(home / "tree" / "data", TreeShape(jobs=args.jobs, seed=args.seed))
        files = sum(1 for p in tree.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        print(f"{args.jobs:,} jobs, {files:,} files, {size / 2**20:.1f} MiB", flush=True)
        rows: dict[str, float] = {}
        with database(admin_dsn) as plain:
            rows["b"] = _timed(["comsa_migrate", "backfill", str(tree), "--dsn", plain, "-q"])
        with database(admin_dsn) as dsn:
            backfill = ["comsa_migrate", "backfill", str(tree), "--dsn", dsn, "-q"]
            rows["bs"] = _timed([*backfill, "--file-store", "db"])
            rows["e"] = _timed(
                ["comsa_migrate", "export", str(home / "e" / "data"), "--dsn", dsn, "-q"]
            )
            rows["r"] = _timed(
                ["comsa_migrate", "restore", str(home / "r" / "data"), "--dsn", dsn, "-q"]
            )
            restore = ["comsa_migrate", "restore", str(home / "rn" / "data"), "--dsn", dsn]
            rows["rn"] = _timed([*restore, "-q", "--fsync", "none"])
            each = ["comsa_migrate", "restore", str(home / "re" / "data"), "--dsn", dsn]
            rows["re"] = _timed([*each, "-q", "--fsync", "each"])
        started = time.perf_counter()
        subprocess.run(["cp", "-r", str(tree), str(home / "cp")], check=True)
        rows["cp"] = time.perf_counter() - started
        shutil.rmtree(home / "cp")
    for key, seconds in rows.items():
        print(f"  ({key:<2}) {seconds:8.2f} s  {args.jobs / seconds:8,.0f} jobs/s")
    print(f"  e/b  = {rows['e'] / rows['b']:.2f}   e/bs = {rows['e'] / rows['bs']:.2f}")
    print(
        f"  r/cp = {rows['r'] / rows['cp']:.2f}   re/cp = {rows['re'] / rows['cp']:.2f}"
        f"   rn/cp = {rows['rn'] / rows['cp']:.2f}"
    )
    return 0


def _timed(args: list[str]) -> float:
    child = _child(args)
    return child.seconds


if __name__ == "__main__":
    sys.exit(main())
