"""Where the time goes: the client's CPU, the server backend's CPU, and the wall.

    python -m bench.split --jobs 20000 [--dsn DSN] [--tree DIR] [--batch-size N] [--repeat N]
                          [--writers N]

Runs, in this process, the COPY lower bound into one fresh database and backfill()
(the call the CLI makes) into another, then the rerun, and reads the backend's CPU
time from /proc/<pid>/stat, so the server must run on this machine. When client and
server overlap, the wall time approaches the larger of the two CPU times; their sum is
what a plain request-and-wait loop takes. (n) is (b) without the per-job lock (see
bench.run); with --repeat, the cold backfills (b) and (n) are run that many times each,
one after the other. With --writers N (the CLI's --jobs), (b), (c) and (n) write on N
connections of their own: the server's CPU is then the sum over every backend of the
run, and a line after each says how it spread over them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.pipeline.options import WriteOptions

from .baselines import copy_rows
from .generate import TreeShape
from .run import _kept_tree, _without_job_lock
from .servers import DEFAULT_DSN, database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.split", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--tree", type=Path, default=None, help="keep the tree here")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (b) and (n)")
    parser.add_argument("--writers", type=int, default=1, help="writer connections (--jobs)")
    args = parser.parse_args(argv)
    home = args.tree or Path(f"bench/trees/{args.jobs}-{args.seed}")
    data_dir = _kept_tree(home, TreeShape(args.jobs, args.seed))
    write = WriteOptions(batch_size=args.batch_size, connections=args.writers)
    options = BackfillOptions(data_dir, write)
    print(
        f"{'':<12}{'wall s':>8}{'client CPU s':>14}{'server CPU s':>14}{'µs/job wall':>13}"
        f"{'µs/job server':>15}"
    )
    with database(args.dsn) as dsn, psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        _print("(a) COPY", args.jobs, _measure(conn, lambda: copy_rows(conn, str(data_dir))))
        conn.commit()
    for _ in range(args.repeat):
        with database(args.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
            _print_run("(b) cold", args.jobs, conn, dsn, options)
            _print_run("(c) rerun", args.jobs, conn, dsn, options)
        with database(args.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
            _without_job_lock(dsn)
            _print_run("(n) no lock", args.jobs, conn, dsn, options)
    return 0


def _print_run(
    label: str, jobs: int, conn: psycopg.Connection[Any], dsn: str, options: BackfillOptions
) -> None:
    """One backfill, its writers' backends counted with the main connection's."""
    writers: list[float] = []  # the CPU of each writer's backend, read as it closes

    def connect() -> psycopg.Connection[Any]:
        return _CountedConnection.connect(dsn, autocommit=True, cpu_seen=writers.append)

    wall, client, server = _measure(conn, lambda: backfill(conn, options, connect=connect))
    _print(label, jobs, (wall, client, server + sum(writers)))
    if writers:
        spread = ", ".join(f"{cpu:.2f}" for cpu in writers)
        print(f"{'':<12}server CPU s: main connection {server:.2f}, writers {spread}")


class _CountedConnection(psycopg.Connection[Any]):
    """A writer's connection that reads its backend's CPU time just before it closes."""

    cpu_seen: Callable[[float], object]

    @classmethod
    def connect(  # type: ignore[override]
        cls, conninfo: str, *, cpu_seen: Callable[[float], object], **kwargs: Any
    ) -> _CountedConnection:
        conn = super().connect(conninfo, **kwargs)
        conn.cpu_seen = cpu_seen
        conn.backend = conn.info.backend_pid
        conn.started = _process_cpu(conn.backend)
        return conn  # type: ignore[return-value]

    def close(self) -> None:
        if not self.closed:
            self.cpu_seen(_process_cpu(self.backend) - self.started)
        super().close()


def _print(label: str, jobs: int, times: tuple[float, float, float]) -> None:
    wall, client, server = times
    print(
        f"{label:<12}{wall:>8.2f}{client:>14.2f}{server:>14.2f}{wall / jobs * 1e6:>13.0f}"
        f"{server / jobs * 1e6:>15.0f}",
        flush=True,
    )


def _measure(
    conn: psycopg.Connection[Any], work: Callable[[], object]
) -> tuple[float, float, float]:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = int(row[0])
    wall, client, server = time.perf_counter(), _own_cpu(), _process_cpu(backend)
    work()
    return (
        time.perf_counter() - wall,
        _own_cpu() - client,
        _process_cpu(backend) - server,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
