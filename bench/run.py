"""Benchmark the backfill against a COPY lower bound and a bare walk, on one server, in one run.

    python -m bench.run --jobs 20000
    python -m bench.run --jobs 100000 --only b      # the memory check
    python -m bench.run --jobs 20000 --embedded     # an embedded PostgreSQL instead of --dsn
    python -m bench.run --jobs 20000 --only bn --repeat 3   # what the per-job lock costs
    python -m bench.run --jobs 20000 --only bi --repeat 3   # what copying uploads costs
    python -m bench.run --jobs 20000 --only bf --repeat 3   # what --file-store db costs
    python -m bench.run --jobs 20000 --only a --sweep 1,2,4 --repeat 3   # writers (--jobs N)

Each measure is the wall-clock time of one child process, from spawn to exit, so the
baselines pay for their interpreter start as the CLI does; peak RSS is that child's
(see bench/peak.py).
See BENCHMARKS.md for what is measured and why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from comsa_migrate.db.migrations import create_input_files_table
from comsa_migrate.db.target import redact

from .bytecode import compile_project
from .generate import TreeShape, generate
from .servers import DEFAULT_DSN, database, server

ROOT = Path(__file__).resolve().parent.parent
MEASURES = {
    "a": "(a) COPY lower bound, one transaction",
    "b": "(b) cold backfill",
    "c": "(c) rerun on the unchanged tree (warm)",
    "d": "(d) bare walk, stat every file (warm)",
    "n": "(n) cold backfill without the per-job lock",
    "i": "(i) cold backfill filling job_input_files",
    "f": "(f) cold backfill with --file-store db",
    "v": "(v) cold backfill, tables analyzed empty",
}
TARGETS = {"b/a": 2.0, "c/d": 2.0, "b/n": 1.1}  # the targets BENCHMARKS.md states


@dataclass(frozen=True, slots=True)
class Child:
    """One measured child process."""

    seconds: float
    cpu_seconds: float  # the child's own user and system time; the server's is not in it
    peak_rss_kb: int
    stdout: str


@dataclass
class Round:
    """The measures of one pass over (a)-(d), keyed by letter."""

    results: dict[str, Child] = field(default_factory=dict)

    def ratio(self, top: str, bottom: str) -> float | None:
        if top in self.results and bottom in self.results:
            return self.results[top].seconds / self.results[bottom].seconds
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    compile_project()
    only = set(args.only)
    with server(args.embedded, args.dsn) as admin_dsn, _tree(args) as data_dir:
        counts = _tree_counts(data_dir)
        _warm(data_dir)
        print(_header(args, admin_dsn, counts))
        rounds = [_round(args, admin_dsn, data_dir, only, counts) for _ in range(args.repeat)]
    print(_report(rounds, args.jobs))
    if args.json:
        args.json.write_bytes(
            orjson.dumps(_as_json(args, rounds, counts), option=orjson.OPT_INDENT_2)
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the tree (20000)")
    parser.add_argument("--seed", type=int, default=20_000, help="generator seed (20000)")
    parser.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="a PostgreSQL role that may CREATE DATABASE; each measure gets a fresh database "
        "(default: $COMSA_BENCH_DSN, else the PostgreSQL service on 127.0.0.1:5432)",
    )
    parser.add_argument(
        "--embedded", action="store_true", help="start a throwaway embedded PostgreSQL instead"
    )
    parser.add_argument(
        "--tree", type=Path, help="generate the tree here and keep it (reused when it matches)"
    )
    parser.add_argument(
        "--only",
        default="abcd",
        help="which measures to run (abcd; n: b without the job lock; i: b with "
        "job_input_files; f: b with --file-store db; v: b into tables analyzed empty)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="passes over the measures (1)")
    parser.add_argument("--batch-size", type=int, help="passed to comsa-migrate backfill")
    parser.add_argument(
        "--writers", type=int, help="passed to comsa-migrate backfill as --jobs (its default)"
    )
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[],
        metavar="N,N,...",
        help="also measure (b) with each of these --jobs, e.g. 1,2,4",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser


def _round(
    args: argparse.Namespace, admin_dsn: str, data_dir: Path, only: set[str], counts: dict[str, int]
) -> Round:
    result = Round()
    if "a" in only:
        with database(admin_dsn) as dsn:
            child = _child(["bench.baselines", "copy", str(data_dir), dsn])
            _check_rows(dsn, counts, "(a)")
            result.results["a"] = child
            _print_row("a", child, args.jobs)
    if only & {"b", "c"}:
        with database(admin_dsn) as dsn:
            backfill = _backfill_args(args, data_dir, dsn)
            child = _child(backfill)
            _check_run(dsn, "insert", args.jobs, child)
            _check_rows(dsn, counts, "(b)")
            result.results["b"] = child
            _print_row("b", child, args.jobs)
            if "c" in only:
                child = _child(backfill)
                _check_run(dsn, "unchanged", args.jobs, child)
                result.results["c"] = child
                _print_row("c", child, args.jobs)
    for writers in args.sweep:
        label = f"(b) cold backfill, --jobs {writers}"
        _cold_backfill(args, admin_dsn, data_dir, counts, result, f"b{writers}", label, writers)
    if "n" in only:
        _cold_backfill(args, admin_dsn, data_dir, counts, result, "n", setup=_without_job_lock)
    if "i" in only:
        _cold_backfill(args, admin_dsn, data_dir, counts, result, "i", setup=_with_input_files)
    if "f" in only:
        extra = ["--file-store", "db"]
        _cold_backfill(args, admin_dsn, data_dir, counts, result, "f", extra=extra)
    if "v" in only:
        _cold_backfill(args, admin_dsn, data_dir, counts, result, "v", setup=_analyzed_empty)
    if "d" in only:
        child = _child(["bench.baselines", "walk", str(data_dir)])
        result.results["d"] = child
        _print_row("d", child, args.jobs)
    return result


def _backfill_args(
    args: argparse.Namespace, data_dir: Path, dsn: str, writers: int | None = None
) -> list[str]:
    backfill = ["comsa_migrate", "backfill", str(data_dir), "--dsn", dsn, "-q"]
    if args.batch_size:
        backfill += ["--batch-size", str(args.batch_size)]
    if writers or args.writers:
        backfill += ["--jobs", str(writers or args.writers)]
    return backfill


def _cold_backfill(
    args: argparse.Namespace,
    admin_dsn: str,
    data_dir: Path,
    counts: dict[str, int],
    result: Round,
    key: str,
    label: str | None = None,
    writers: int | None = None,
    setup: Callable[[str], None] | None = None,
    extra: list[str] | None = None,
) -> None:
    """One more cold backfill into a fresh database (after ``setup``), with ``extra``
    options, checked and kept."""
    with database(admin_dsn) as dsn:
        if setup is not None:
            setup(dsn)
        child = _child([*_backfill_args(args, data_dir, dsn, writers), *(extra or [])])
        _check_run(dsn, "insert", args.jobs, child)
        _check_rows(dsn, counts, label or f"({key})")
        result.results[key] = child
        _print_row(key, child, args.jobs, label)


def _with_input_files(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_input_files_table(conn)


def _analyzed_empty(dsn: str) -> None:
    """The tables as a DBA's VACUUM ANALYZE leaves them before any job: known to be empty."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _without_job_lock(dsn: str) -> None:
    """apply_job() as it stands, less the per-job lock it takes first."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_get_functiondef('comsa_migrate.apply_job(jsonb,boolean,bigint)'"
            "::regprocedure)"
        ).fetchone()
        assert row is not None
        unlocked, found = re.subn(r"PERFORM comsa_migrate\.lock_job\([^;]*\);", "", row[0])
        if found != 1:
            raise SystemExit("apply_job() takes no per-job lock to leave out")
        conn.execute(unlocked)


def _child(args: list[str]) -> Child:
    """Run ``python -m MODULE ARGS`` from the project root: its wall time, peak RSS and output."""
    with tempfile.TemporaryDirectory(prefix="comsa-bench-child-") as scratch:
        peak_file = os.path.join(scratch, "peak")
        out_file = os.path.join(scratch, "out")
        with open(out_file, "wb") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.peak", peak_file, *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        output = Path(out_file).read_text()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args[:2])} exited {proc.returncode}:\n{output}")
        cpu = usage.ru_utime + usage.ru_stime
        return Child(seconds, cpu, int(Path(peak_file).read_text()), output)


def _check_rows(dsn: str, counts: dict[str, int], label: str) -> None:
    with psycopg.connect(dsn) as conn:
        found = {
            table: conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]  # type: ignore[index]
            for table in ("jobs", "job_logs", "job_files")
        }
    if found != counts:
        raise SystemExit(f"{label} wrote {found}, expected {counts}")


def _check_run(dsn: str, action: str, jobs: int, child: Child) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT totals FROM comsa_migrate.runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    actions = row[0]["actions"] if row else {}
    if actions.get(action) != jobs:
        raise SystemExit(
            f"expected {jobs} jobs {action}, the run reports {actions}\n{child.stdout}"
        )


@contextlib.contextmanager
def _tree(args: argparse.Namespace) -> Iterator[Path]:
    shape = TreeShape(jobs=args.jobs, seed=args.seed)
    if args.tree is not None:
        yield _kept_tree(args.tree, shape)
        return
    home = Path(tempfile.mkdtemp(prefix="comsa-bench-tree-"))
    try:
        yield _generated(home / "data", shape)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _kept_tree(home: Path, shape: TreeShape) -> Path:
    marker = home / "shape.json"
    wanted = orjson.dumps({"jobs": shape.jobs, "seed": shape.seed})
    if marker.exists() and marker.read_bytes() == wanted:
        print(f"reusing the tree in {home}", file=sys.stderr)
        return home / "data"
    shutil.rmtree(home / "data", ignore_errors=True)
    data_dir = _generated(home / "data", shape)
    marker.write_bytes(wanted)
    return data_dir


def _generated(data_dir: Path, shape: TreeShape) -> Path:
    started = time.perf_counter()
    generate(data_dir, shape)
    elapsed = time.perf_counter() - started
    print(f"generated {shape.jobs:,} jobs in {elapsed:.1f} s", file=sys.stderr)
    return data_dir


def _tree_counts(data_dir: Path) -> dict[str, int]:
    """The rows a backfill of this tree writes, counted from the tree itself."""
    jobs = logs = files = 0
    for entry in os.scandir(data_dir / "jobs"):
        jobs += 1
        logs += len(orjson.loads(Path(entry.path).read_bytes()).get("log") or ())
    for folder in ("uploads", "outputs"):
        for _, _, names in os.walk(data_dir / folder):
            files += len(names)
    return {"jobs": jobs, "job_logs": logs, "job_files": files}


def _warm(data_dir: Path) -> None:
    """Read every file once, so that every measure meets the same warm page cache."""
    for folder, _, names in os.walk(data_dir):
        for name in names:
            with open(os.path.join(folder, name), "rb") as fh:
                fh.read()


def _header(args: argparse.Namespace, admin_dsn: str, counts: dict[str, int]) -> str:
    with psycopg.connect(admin_dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    where = "embedded" if args.embedded else redact(admin_dsn)
    return (
        f"{counts['jobs']:,} jobs ({counts['job_logs']:,} log rows, {counts['job_files']:,} files),"
        f" seed {args.seed}\nPostgreSQL {version} ({where}), {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}\n"
        f"{'measure':<42}{'seconds':>9}{'jobs/s':>10}{'client CPU':>12}{'peak RSS':>11}"
    )


def _print_row(letter: str, child: Child, jobs: int, label: str | None = None) -> None:
    rate = jobs / child.seconds
    rss = child.peak_rss_kb / 1024
    print(
        f"{label or MEASURES[letter]:<42}{child.seconds:>9.2f}{rate:>10,.0f}"
        f"{child.cpu_seconds:>10.2f} s{rss:>8.0f} MB",
        flush=True,
    )


def _report(rounds: list[Round], jobs: int) -> str:
    lines = []
    pairs = [("b/a", ("b", "a")), ("c/d", ("c", "d")), ("b/n", ("b", "n")), ("i/b", ("i", "b"))]
    pairs += [("f/b", ("f", "b")), ("v/b", ("v", "b"))]
    swept = sorted({k for rnd in rounds for k in rnd.results if k[0] == "b" and k[1:].isdigit()})
    pairs += [(f"{k}/a", (k, "a")) for k in sorted(swept, key=lambda k: int(k[1:]))]
    for name, (top, bottom) in pairs:
        ratios = [r for r in (rnd.ratio(top, bottom) for rnd in rounds) if r is not None]
        if ratios:
            each = ", ".join(f"{r:.2f}" for r in ratios) if len(ratios) > 1 else ""
            median = statistics.median(ratios)
            target = f" (target <= {TARGETS[name]})" if name in TARGETS else ""
            lines.append(f"{name} = {median:.2f}{target}" + (f"  median of {each}" if each else ""))
    rss = [rnd.results["b"].peak_rss_kb / 1024 for rnd in rounds if "b" in rnd.results]
    if rss:
        lines.append(f"peak RSS of (b) = {max(rss):.0f} MB at {jobs:,} jobs (target <= 150 MB)")
    kept = [rnd.results["f"].peak_rss_kb / 1024 for rnd in rounds if "f" in rnd.results]
    if kept:
        lines.append(f"peak RSS of (f) = {max(kept):.0f} MB at {jobs:,} jobs")
    return "\n".join(lines)


def _as_json(args: argparse.Namespace, rounds: list[Round], counts: dict[str, int]) -> Any:
    return {
        "jobs": args.jobs,
        "seed": args.seed,
        "rows": counts,
        "rounds": [
            {
                k: {
                    "seconds": c.seconds,
                    "cpu_seconds": c.cpu_seconds,
                    "peak_rss_kb": c.peak_rss_kb,
                }
                for k, c in r.results.items()
            }
            for r in rounds
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
