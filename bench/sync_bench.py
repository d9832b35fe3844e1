"""Benchmark the sync daemon: arrival latency, a burst of new jobs, and a memory soak.

    python -m bench.sync_bench latency                 # 1,000 arrivals at 20 a second
    python -m bench.sync_bench burst                   # 5,000 jobs as fast as can be written
    python -m bench.sync_bench soak --minutes 20       # steady arrivals, RSS at start and end
    python -m bench.sync_bench all --embedded          # all three, on an embedded PostgreSQL

The daemon is the real CLI (`comsa-migrate sync --log-format json`) in a child process;
this process is the legacy writer. A job's commit time is the timestamp of its log line,
written just after its transaction committed. See BENCHMARKS.md for the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.db.target import redact

from .bytecode import compile_project
from .servers import DEFAULT_DSN, database, server

ROOT = Path(__file__).resolve().parent.parent
LATENCY_SLACK_S = 0.25  # the target: debounce + 250 ms at the 95th percentile
BURST_FACTOR = 2.0  # the target: within twice the cold backfill time
SOAK_UPDATED_JOBS = 500  # the jobs that --soak-kind updates changes in turn


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    compile_project()
    results: dict[str, Any] = {"host": _host(), "started": datetime.now().isoformat()}
    with server(args.embedded, args.dsn) as admin_dsn:
        results["server"] = redact(admin_dsn)
        print(f"# sync daemon benchmark on {results['host']}, {results['server']}")
        if args.mode in ("latency", "all"):
            results["latency"] = latency(admin_dsn, args)
        if args.mode in ("burst", "all"):
            results["burst"] = burst(admin_dsn, args)
        if args.mode in ("soak", "all"):
            results["soak"] = soak(admin_dsn, args)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sync-{args.mode}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"# results in {path.relative_to(ROOT)}")
    failed = [k for k in ("latency", "burst") if k in results and not results[k]["ok"]]
    return 1 if failed else 0


def latency(admin_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """Jobs renamed into jobs/ one by one at a steady rate: rename to commit, per job."""
    with _workdir(args.workdir) as work, database(admin_dsn, migrated=False) as dsn:
        staging = _generate(work / "staging", args.arrivals, args.seed)
        watched = _empty_tree(work / "watched")
        with Daemon(watched, dsn, "--debounce", str(args.debounce)) as daemon:
            arrivals = _arrive_steadily(staging, watched, args.rate, len(_job_ids(staging)))
            daemon.wait_for(arrivals, timeout=args.debounce + 30)
        seconds = sorted(daemon.commits[job] - at for job, at in arrivals.items())
    target = args.debounce + LATENCY_SLACK_S
    p50, p95, p99 = (_percentile(seconds, q) for q in (50, 95, 99))
    result = {
        "arrivals": len(seconds),
        "rate_per_s": args.rate,
        "debounce_s": args.debounce,
        "p50_s": p50,
        "p95_s": p95,
        "p99_s": p99,
        "max_s": seconds[-1],
        "target_p95_s": target,
        "ok": p95 <= target,
    }
    print(
        f"latency  {len(seconds)} arrivals at {args.rate:g}/s, debounce {args.debounce:g} s: "
        f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {seconds[-1] * 1000:.0f} ms (target p95 <= {target * 1000:.0f} ms: "
        f"{'met' if result['ok'] else 'MISSED'})"
    )
    return result


def burst(admin_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """Jobs and their files written as fast as possible, against a cold backfill of them.

    Each round backfills the reference tree into a fresh database, then has the daemon
    sync the same jobs as this process writes them: files first, each job JSON last by
    an atomic rename, with the reference's bytes and mtimes, so that both databases must
    end up with the same rows.
    """
    rounds = []
    with _workdir(args.workdir) as work:
        reference = _generate(work / "reference", args.jobs, args.seed)
        jobs = _load_jobs(reference)
        for n in range(args.repeat):
            rounds.append(_burst_round(admin_dsn, reference, jobs, work / f"watched-{n}"))
    median = statistics.median(r["ratio"] for r in rounds)
    print(f"burst    median ratio over {len(rounds)} rounds: {median:.2f}")
    return {
        "jobs": args.jobs,
        "rounds": rounds,
        "median_ratio": median,
        "ok": median <= BURST_FACTOR and all(r["rows_identical_to_backfill"] for r in rounds),
    }


def _burst_round(
    admin_dsn: str, reference: Path, jobs: list[_Job], watched: Path
) -> dict[str, Any]:
    with database(admin_dsn, migrated=False) as backfill_dsn:
        started = time.monotonic()
        output = _run_cli("backfill", str(reference), "--dsn", backfill_dsn, "-q")
        backfill_s = time.monotonic() - started
        engine = re.search(r"elapsed\s+([\d.]+) s", output)
        expected = _digest(backfill_dsn)
    _empty_tree(watched)
    with database(admin_dsn, migrated=False) as dsn, Daemon(watched, dsn) as daemon:
        cpu_before = daemon.cpu_s()
        started_wall = time.time()
        for job in jobs:
            _write_job(watched, job)
        written_s = time.time() - started_wall
        ids = [job.job_id for job in jobs]
        daemon.wait_for(dict.fromkeys(ids, started_wall), timeout=max(120, 10 * backfill_s))
        burst_s = max(daemon.commits[job_id] for job_id in ids) - started_wall
        daemon_cpu_s = daemon.cpu_s() - cpu_before
        found = _digest(dsn)
        rescans = daemon.rescans
    result = {
        "cold_backfill_s": backfill_s,
        "cold_backfill_engine_s": float(engine.group(1)) if engine else None,
        "writer_s": written_s,
        "burst_s": burst_s,
        "after_last_write_s": burst_s - written_s,
        "daemon_cpu_s": daemon_cpu_s,
        "ratio": burst_s / backfill_s,
        "rows_identical_to_backfill": found == expected,
        "rescans": rescans,
    }
    print(
        f"burst    {len(jobs):,} jobs written in {written_s:.1f} s, all committed "
        f"{burst_s:.1f} s after the first write (daemon CPU {daemon_cpu_s:.1f} s); cold "
        f"backfill {backfill_s:.1f} s; ratio {burst_s / backfill_s:.2f} (target <= "
        f"{BURST_FACTOR:g}); rows identical to the backfill's: {found == expected}; "
        f"rescans {rescans}"
    )
    return result


@dataclass(frozen=True, slots=True)
class _Job:
    """One job's files, read into memory so that writing them costs only the writing."""

    job_id: str
    files: tuple[tuple[str, bytes, int], ...]  # (path under DATA_DIR, bytes, mtime ns)
    json: bytes
    json_mtime_ns: int


def _load_jobs(tree: Path) -> list[_Job]:
    jobs = []
    for job_id in _job_ids(tree):
        files = []
        for folder in ("uploads", "outputs"):
            for root, _, names in os.walk(tree / folder / job_id):
                for name in sorted(names):
                    path = Path(root) / name
                    rel = path.relative_to(tree).as_posix()
                    files.append((rel, path.read_bytes(), path.stat().st_mtime_ns))
        json_path = tree / "jobs" / f"{job_id}.json"
        jobs.append(
            _Job(job_id, tuple(files), json_path.read_bytes(), json_path.stat().st_mtime_ns)
        )
    return jobs


def _write_job(data_dir: Path, job: _Job) -> None:
    for rel, content, mtime_ns in job.files:
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    temporary = data_dir / "jobs" / f".{job.job_id}.json.tmp"
    temporary.write_bytes(job.json)
    os.utime(temporary, ns=(job.json_mtime_ns, job.json_mtime_ns))
    os.rename(temporary, data_dir / "jobs" / f"{job.job_id}.json")


def soak(admin_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steady arrivals for --minutes: the daemon's resident memory, sampled every 10 s.

    --soak-kind new: new jobs with their files, each with new folders to watch;
    --soak-kind updates: changes to the jobs already there (a log line, an output row).
    """
    total = int(args.minutes * 60 * args.soak_rate)
    with _workdir(args.workdir) as work, database(admin_dsn, migrated=False) as dsn:
        watched = _empty_tree(work / "watched")
        if args.soak_kind == "new":
            staging = _generate(work / "staging", total, args.seed)
        else:
            existing = _generate(work / "existing", SOAK_UPDATED_JOBS, args.seed)
            for job_id in _job_ids(existing):
                _arrive(existing, watched, job_id)
        with Daemon(watched, dsn) as daemon:
            samples = [(0.0, daemon.rss_kb())]
            started = time.monotonic()

            def sample() -> None:
                samples.append((time.monotonic() - started, daemon.rss_kb()))

            if args.soak_kind == "new":
                arrivals = _arrive_steadily(staging, watched, args.soak_rate, total, every=sample)
                daemon.wait_for(arrivals, timeout=60)
            else:
                _update_steadily(watched, args.soak_rate, total, every=sample)
                daemon.wait_for_actions("update", total, timeout=60)
            sample()
            rescans = daemon.rescans
            folders = sum(1 for _ in watched.glob("*/*/")) + 4
    after_warmup = [kb for t, kb in samples if t >= 60] or [samples[-1][1]]
    result = {
        "kind": args.soak_kind,
        "minutes": args.minutes,
        "rate_per_s": args.soak_rate,
        "arrivals": total,
        "watched_folders_at_end": folders,
        "rss_kb_start": samples[0][1],
        "rss_kb_after_1_min": after_warmup[0],
        "rss_kb_end": samples[-1][1],
        "rss_kb_max": max(kb for _, kb in samples),
        "rescans": rescans,
        "samples": samples,
    }
    print(
        f"soak     {args.soak_kind}: {total:,} arrivals over {args.minutes:g} min at "
        f"{args.soak_rate:g}/s, {folders:,} folders watched at the end: RSS "
        f"{samples[0][1] / 1024:.1f} MiB at start, {after_warmup[0] / 1024:.1f} MiB after "
        f"1 min, {samples[-1][1] / 1024:.1f} MiB at the end, max "
        f"{result['rss_kb_max'] / 1024:.1f} MiB; {rescans} rescans"
    )
    return result


def _update_steadily(watched: Path, rate: float, count: int, every: Any = None) -> None:
    """Change the jobs already there in turn: one more log line, one more output row."""
    ids = _job_ids(watched)
    started = time.monotonic()
    next_sample = started + 10
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        job_id = ids[n % len(ids)]
        path = watched / "jobs" / f"{job_id}.json"
        doc = json.loads(path.read_bytes())
        doc["log"] = [*(doc.get("log") or []), f"[2025-06-01 12:00:00] soak change {n}"]
        temporary = path.with_name(f".{job_id}.json.tmp")
        temporary.write_text(json.dumps(doc))
        os.rename(temporary, path)
        for output in (watched / "outputs" / job_id).glob("*.csv"):
            with output.open("a") as fh:
                fh.write(f"soak,{n}\n")
            break
        if every is not None and time.monotonic() >= next_sample:
            every()
            next_sample += 10


class Daemon:
    """`comsa-migrate sync` in a child process, its JSON log lines read as they come."""

    def __init__(self, data_dir: Path, dsn: str, *args: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "comsa_migrate",
            "sync",
            str(data_dir),
            "--dsn",
            dsn,
            "--log-format",
            "json",
            *args,
        ]
        self.commits: dict[str, float] = {}  # job id -> Unix time of its first write
        self.actions: dict[str, int] = {}
        self.rescans = 0
        self._watching = threading.Event()
        self._changed = threading.Condition()

    def __enter__(self) -> Daemon:
        self.process = subprocess.Popen(self.command, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._watching.wait(60):
            raise SystemExit("the daemon did not start watching within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self._reader.join(5)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                print(line, end="", file=sys.stderr)
                continue
            message = record.get("message", "")
            if record.get("level") in ("warning", "error"):
                print(f"  daemon: {message}", file=sys.stderr)
            if message.startswith("watching "):
                self._watching.set()
            if message.startswith("rescan ("):
                self.rescans += 1
            job_id, action = record.get("job_id"), record.get("action")
            if job_id and action:
                with self._changed:
                    self.actions[action] = self.actions.get(action, 0) + 1
                    if action in ("insert", "update"):
                        ts = datetime.fromisoformat(record["ts"]).timestamp()
                        self.commits.setdefault(job_id, ts)
                    self._changed.notify_all()

    def wait_for(self, jobs: dict[str, float], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(job in self.commits for job in jobs):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sum(job not in self.commits for job in jobs)
                    raise SystemExit(f"{missing} jobs never committed within {timeout:.0f} s")
                self._changed.wait(remaining)

    def wait_for_actions(self, action: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.actions.get(action, 0) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SystemExit(f"{self.actions} after {timeout:.0f} s, not {count} {action}")
                self._changed.wait(remaining)

    def cpu_s(self) -> float:
        """User and system CPU time of the daemon so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def _arrive_steadily(
    staging: Path, watched: Path, rate: float, count: int, every: Any = None
) -> dict[str, float]:
    """Move ``count`` jobs in at ``rate`` a second; returns each job's arrival (Unix time)."""
    arrivals: dict[str, float] = {}
    started = time.monotonic()
    next_sample = started + 10
    for n, job_id in enumerate(_job_ids(staging)[:count]):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        arrivals[job_id] = _arrive(staging, watched, job_id)
        if every is not None and time.monotonic() >= next_sample:
            every()
            next_sample += 10
    return arrivals


def _arrive(staging: Path, watched: Path, job_id: str) -> float:
    """A job's files first, then its JSON by an atomic rename; returns the rename's time.

    The JSON is first copied to a hidden temporary name in jobs/, then renamed, as a
    careful writer does it; so the daemon sees both halves of the rename.
    """
    for folder in ("uploads", "outputs"):
        source = staging / folder / job_id
        if source.is_dir():
            shutil.copytree(source, watched / folder / job_id)
    temporary = watched / "jobs" / f".{job_id}.json.tmp"
    shutil.copy2(staging / "jobs" / f"{job_id}.json", temporary)
    os.rename(temporary, watched / "jobs" / f"{job_id}.json")
    return time.time()


def _job_ids(tree: Path) -> list[str]:
    return sorted(name[: -len(".json")] for name in os.listdir(tree / "jobs"))


def _generate(data_dir: Path, jobs: int, seed: int) -> Path:
    try:
        from .generate import TreeShape, generate
    except ImportError:  # the backfill benchmark's generator is not there: a plain one
        return _plain_tree(data_dir, jobs)
    return generate(data_dir, TreeShape(jobs=jobs, seed=seed))


def _plain_tree(data_dir: Path, jobs: int) -> Path:
    _empty_tree(data_dir)
    for _ in range(jobs):
        job_id = str(uuid.uuid4())
        doc = {
            "id": job_id,
            "type": "pipeline",
            "status": "completed",
            "created_at": "2025-06-01 10:00:00",
            "log": ["[2025-06-01 10:00:01] Starting pipeline", "[2025-06-01 10:00:09] Done"],
        }
        (data_dir / "outputs" / job_id).mkdir()
        (data_dir / "outputs" / job_id / "causes.csv").write_text("cause,value\nsepsis,0.3\n")
        (data_dir / "jobs" / f"{job_id}.json").write_text(json.dumps(doc))
    return data_dir


def _empty_tree(data_dir: Path) -> Path:
    for folder in ("jobs", "uploads", "outputs"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    return data_dir


def _digest(dsn: str) -> str:
    """One value for every job's rows, as comsa-migrate compares them."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(comsa_migrate.stored_content(id)::text, '|'"
            " ORDER BY id)) FROM jobs"
        ).fetchone()
    assert row is not None
    return f"{row[0]} jobs, {row[1]}"


def _run_cli(*args: str) -> str:
    command = [sys.executable, "-m", "comsa_migrate", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _percentile(sorted_values: list[float], q: float) -> float:
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q) - 1]


@contextlib.contextmanager
def _workdir(parent: Path | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="comsa-sync-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _host() -> str:
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_bench", description=__doc__)
    parser.add_argument("mode", choices=("latency", "burst", "soak", "all"))
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="a superuser DSN (databases are made)")
    parser.add_argument("--embedded", action="store_true", help="an embedded PostgreSQL instead")
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--arrivals", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="latency arrivals a second")
    parser.add_argument("--debounce", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs in the burst")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the burst")
    parser.add_argument(
        "--workdir", type=Path, help="where the trees are written (default: the temp folder)"
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the soak")
    parser.add_argument("--soak-rate", type=float, default=5.0, help="soak arrivals a second")
    parser.add_argument(
        "--soak-kind",
        choices=("new", "updates"),
        default="new",
        help="new jobs (new folders to watch), or changes to the jobs already there",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
