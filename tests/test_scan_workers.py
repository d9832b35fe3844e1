"""The scan in forked worker processes: what one process yields, whatever befalls a worker."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bench.generate import TreeShape, generate
from comsa_migrate.backfill import BackfillOptions, backfill
from comsa_migrate.core import scan_workers, tree
from comsa_migrate.core.layout import ScanItem
from comsa_migrate.problems import Problem

from .conftest import Databases, copy_fixture, fresh_database
from .helpers import age_tree, running_daemon, stored_contents, table_counts, wait_until

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not scan_workers.can_fork(), reason="no os.fork here")


@pytest.fixture(scope="module")
def quirky_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every legacy quirk of fixtures/quirks beside 150 sample-shaped jobs; read only."""
    data = copy_fixture("quirks", tmp_path_factory.mktemp("scan-workers"))
    generate(data, TreeShape(150, seed=11))
    _odd_entries(data)
    age_tree(data)  # no fingerprint is racy: two scans take the same ones
    return data


def _odd_entries(data: Path) -> None:
    """What the scan itself finds odd, spread over the listing of jobs/."""
    jobs = sorted(p.stem for p in (data / "jobs").glob("*.json"))
    outside = data.parent / "outside.txt"
    outside.write_bytes(b"not the job's")
    (data / "jobs" / f"{jobs[10].upper()}.json").write_bytes(b"{}")  # one job, two names
    (data / "jobs" / f"{jobs[20]}.json").unlink()
    (data / "jobs" / f"{jobs[20]}.json").symlink_to(data / "jobs" / f"{jobs[21]}.json")
    (data / "jobs" / f"{jobs[30]}.json").unlink()
    (data / "jobs" / f"{jobs[30]}.json").mkdir()  # a folder where the JSON belongs
    for n, job in enumerate(jobs[40:140:10]):
        folder = data / "outputs" / job
        folder.mkdir(exist_ok=True)
        os.mkfifo(folder / f"pipe{n}")
        (folder / f"link{n}").symlink_to(outside)
        (folder / os.fsdecode(b"bad\xff" + str(n).encode())).write_bytes(b"x")
    (data / "outputs" / "11111111-2222-4333-8444-555555555555").mkdir()  # an orphan


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 entries: every worker answers many, the quirks fall in several."""
    monkeypatch.setattr(scan_workers, "CHUNK", 7)


def test_a_scan_in_two_workers_yields_item_for_item_what_one_process_yields(
    quirky_tree: Path, small_chunks: None, caplog: pytest.LogCaptureFixture
) -> None:
    alone = list(tree.scan(quirky_tree))
    problems = [p for i in alone for p in ([i] if isinstance(i, Problem) else i.problems)]
    codes = {problem.code for problem in problems}

    assert list(tree.scan(quirky_tree, workers=2)) == alone
    assert "scan worker" not in caplog.text  # the workers scanned: none fell back
    # the tree holds what the listing of jobs/ finds odd, and what the workers' scans do
    assert {"duplicate_job_id", "symlink_skipped", "orphan_output_dir"} <= codes
    assert {"not_a_file", "special_file_skipped", "invalid_file_name"} <= codes


def test_one_chunk_is_scanned_in_this_process(small_chunks: None) -> None:
    tasks = _tasks(7)
    scanned = list(scan_workers.scan_in_workers(tasks, _scanned, 2))

    assert _what(scanned) == _what(_alone(tasks))
    assert _scanners(scanned) == {os.getpid()}


@pytest.mark.parametrize("workers", [3, 5])
def test_more_workers_than_cores_still_yield_what_one_process_yields(
    small_chunks: None, workers: int
) -> None:
    tasks = _tasks(60)
    scanned = list(scan_workers.scan_in_workers(tasks, _scanned, workers))

    assert _what(scanned) == _what(_alone(tasks))
    assert len(_scanners(scanned)) == workers


def test_the_workers_are_no_more_than_the_usable_cores(
    quirky_tree: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    real = scan_workers.scan_in_workers

    def counting(tasks: list[object], scan_one: object, workers: int) -> Iterator[ScanItem]:
        started.append(workers)
        return real(tasks, scan_one, workers)  # type: ignore[arg-type]

    monkeypatch.setattr(tree, "scan_in_workers", counting)
    monkeypatch.setattr(tree, "usable_cores", lambda: 2)
    list(tree.scan(quirky_tree, workers=8))
    monkeypatch.setattr(tree, "usable_cores", lambda: 1)
    alone = list(tree.scan(quirky_tree, workers=8))

    assert started == [2]  # and with one core, no worker at all
    assert alone == list(tree.scan(quirky_tree))


def test_a_backfill_called_as_a_library_forks_no_scan_process_unless_asked(
    conn: psycopg.Connection[Any],
    quirky_tree: Path,
    small_chunks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forked: list[int] = []
    real = scan_workers.scan_in_workers

    def counting(tasks: list[object], scan_one: object, workers: int) -> Iterator[ScanItem]:
        forked.append(workers)
        return real(tasks, scan_one, workers)  # type: ignore[arg-type]

    monkeypatch.setattr(tree, "scan_in_workers", counting)
    monkeypatch.setattr(tree, "usable_cores", lambda: 2)
    backfill(conn, BackfillOptions(quirky_tree))
    assert forked == []

    backfill(conn, BackfillOptions(quirky_tree, scan_processes=2))
    assert forked == [2]


def test_a_worker_killed_mid_scan_leaves_the_rest_of_its_chunks_to_the_parent(
    small_chunks: None, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = _tasks(100)
    parent = os.getpid()

    def dies_at_41(task: str) -> ScanItem:
        if task == "task-41" and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return _scanned(task)

    scanned = list(scan_workers.scan_in_workers(tasks, dies_at_41, 2))

    assert _what(scanned) == _what(_alone(tasks))
    assert len(_scanners(scanned[:35])) == 2 and parent not in _scanners(scanned[:35])
    assert _scanners(scanned[35:42]) == {parent}  # the chunk of task-41, scanned again here
    assert parent not in _scanners(scanned[42:49])  # the other worker went on
    assert _scanners(scanned[49:56]) == {parent}  # and so on, every other chunk
    (warning,) = [r.getMessage() for r in caplog.records if r.name.endswith("scan_workers")]
    assert "was killed by signal SIGKILL; this process scans the rest of its share" in warning


def test_a_worker_that_fails_leaves_its_chunks_to_the_parent(
    small_chunks: None, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    tasks = _tasks(50)
    parent = os.getpid()

    def fails_in_workers(task: str) -> ScanItem:
        if task == "task-20" and os.getpid() != parent:
            raise RuntimeError("only in a worker")
        return _scanned(task)

    scanned = list(scan_workers.scan_in_workers(tasks, fails_in_workers, 2))

    assert _what(scanned) == _what(_alone(tasks))
    assert _scanners(scanned[14:21]) == {parent}
    assert "exited with status 1 before it answered" in caplog.text
    assert capfd.readouterr().err == ""  # the worker's own end shows no traceback


def test_a_worker_that_cannot_be_forked_leaves_its_chunks_to_the_parent(
    small_chunks: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = _tasks(50)
    real_fork, forks = os.fork, []

    def second_fails() -> int:
        forks.append(1)
        if len(forks) == 2:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real_fork()

    monkeypatch.setattr(os, "fork", second_fails)
    scanned = list(scan_workers.scan_in_workers(tasks, _scanned, 3))

    assert _what(scanned) == _what(_alone(tasks))
    assert _scanners(scanned[7:14]) == _scanners(scanned[28:35]) == {os.getpid()}
    assert len(_scanners(scanned[:7] + scanned[14:21])) == 2  # workers 1 and 3 scanned
    assert "could not start scan worker 2: Resource temporarily unavailable" in caplog.text


def test_a_failure_the_parent_meets_too_is_raised_not_hidden(small_chunks: None) -> None:
    def always_fails(task: str) -> ScanItem:
        if task == "task-20":
            raise RuntimeError("a bug")
        return _scanned(task)

    with pytest.raises(RuntimeError, match="a bug"):
        list(scan_workers.scan_in_workers(_tasks(50), always_fails, 2))


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"]
)
def test_a_signal_for_the_whole_group_is_the_parents_to_handle_not_the_workers(
    small_chunks: None, caplog: pytest.LogCaptureFixture, signum: int
) -> None:
    tasks = _tasks(300)  # about 0.3 s of work for each worker: signalled well before its end
    scanned = scan_workers.scan_in_workers(tasks, _slow, 2)
    first = [next(scanned) for _ in range(14)]  # chunks 0 and 1: both workers at work
    for pid in _scanners(first):
        os.kill(pid, signum)  # as Ctrl-C, or systemd's stop, reaches every process
    rest = list(scanned)

    assert _what(first + rest) == _what(_alone(tasks))
    assert os.getpid() not in _scanners(rest)  # the workers went on to the end
    assert "scan worker" not in caplog.text


def test_closing_the_scan_early_kills_and_reaps_its_workers(small_chunks: None) -> None:
    scanned = scan_workers.scan_in_workers(_tasks(500), _slow, 2)
    workers = _scanners([next(scanned) for _ in range(14)])  # chunks 0 and 1: both workers
    scanned.close()

    assert len(workers) == 2 and os.getpid() not in workers
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped: not even a zombie is left


def test_a_worker_keeps_no_database_session_of_its_parent_alive(dsn: str) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        import psycopg
        from comsa_migrate.core import scan_workers
        from comsa_migrate.problems import Problem

        scan_workers.CHUNK = 1
        conn = psycopg.connect(sys.argv[1], autocommit=True)
        conn.execute("SELECT pg_advisory_lock(424242)")

        def slow(task):
            time.sleep(0 if task == "t0" else 60)
            return Problem("stray_file", str(os.getpid()), path=task)

        scanned = scan_workers.scan_in_workers(["t0", "t1", "t2"], slow, 2)
        print(next(scanned).message, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script, dsn], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    worker = int(parent.stdout)

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(
                lambda: conn.execute("SELECT pg_try_advisory_lock(424242)").fetchone() == (True,),
                10,
                "the killed parent's session to end",
            )
        assert _running(worker)  # asleep in its scan, holding no copy of the connection
    finally:
        os.kill(worker, signal.SIGKILL)


def test_workers_whose_parent_is_killed_stop_at_their_next_write(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from comsa_migrate.core import scan_workers
        from comsa_migrate.problems import Problem

        scan_workers.CHUNK = 2

        def slow(task):
            time.sleep(0.02)
            return Problem("stray_file", str(os.getpid()), path=task)

        scanned = scan_workers.scan_in_workers([f"t{n}" for n in range(10_000)], slow, 2)
        pids = {next(scanned).message for _ in range(4)}
        print(" ".join(sorted(pids)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    workers = [int(pid) for pid in parent.stdout.split()]

    assert parent.returncode == -signal.SIGKILL and len(workers) == 2
    for pid in workers:
        wait_until(lambda pid=pid: not _running(pid), 10, f"worker {pid} to stop")


def _tasks(n: int) -> list[str | Problem]:
    """n tasks, with a problem of the listing every 9th: passed through, in place."""
    return [
        Problem("stray_file", "listed", path=f"p{i}") if i % 9 == 4 else f"task-{i}"
        for i in range(n)
    ]


def _scanned(task: str) -> ScanItem:
    """What a scan of ``task`` gives, and which process scanned it (in job_id)."""
    return Problem("stray_file", f"scanned {task}", job_id=str(os.getpid()), path=task)


def _slow(task: str) -> ScanItem:
    time.sleep(0.002)
    return _scanned(task)


def _scanners(items: list[ScanItem]) -> set[int]:
    """The processes that scanned ``items`` (the listing's problems were scanned by none)."""
    return {int(item.job_id) for item in items if isinstance(item, Problem) and item.job_id}


def _what(items: Iterable[ScanItem]) -> list[tuple[str, str, str | None]]:
    """The items, without the process that scanned each."""
    return [(item.code, item.message, item.path) for item in items if isinstance(item, Problem)]


def _alone(tasks: list[str | Problem]) -> Iterator[ScanItem]:
    for task in tasks:
        yield task if isinstance(task, Problem) else _scanned(task)


def _running(pid: int) -> bool:
    """Whether ``pid`` is still a process, not a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "with-database"])
def test_the_report_is_the_same_from_one_scanning_process_or_two(
    quirky_tree: Path, small_chunks: None, cli: Any, dsn: str, offline: bool
) -> None:
    where = ["--offline"] if offline else ["--dsn", dsn]
    reports = [
        cli("report", quirky_tree, *where, "--format", "json", "--all", "--jobs", jobs)
        for jobs in ("1", "2")
    ]
    one, two = (orjson.loads(report.stdout) for report in reports)

    assert reports[0].exit_code == reports[1].exit_code == 1  # the quirks hold errors
    for report in (one, two):  # when, and how long it took
        assert report.pop("generated_at") and report["summary"].pop("elapsed_s") >= 0
    assert two == one
    assert one["problems"] and len(one["jobs"]) > 150


@pytest.mark.slow
def test_a_daemon_catching_up_in_two_scan_workers_writes_what_one_process_writes(
    quirky_tree: Path,
    small_chunks: None,
    dsn: str,
    databases: Databases,
    template_db: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        fresh_database(databases, template_db) as alone_dsn,
        psycopg.connect(alone_dsn, autocommit=True) as conn,
    ):
        backfill(conn, BackfillOptions(quirky_tree))
        alone = stored_contents(conn), table_counts(conn)

    with running_daemon(dsn, quirky_tree, ready=False, connections=2, scan_processes=2) as daemon:
        wait_until(daemon.ready.is_set, 120, "the daemon to catch up")
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert (stored_contents(conn), table_counts(conn)) == alone

    assert alone[1]["jobs"] > 150
    assert "scan worker" not in caplog.text  # the workers scanned: none fell back
