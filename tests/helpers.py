"""What the tests share: trees and job files, row counts and digests, bounded waits, a
backfill in a subprocess, a sync daemon in a thread, and a TCP proxy that can cut a client
off from PostgreSQL and let it back.

Every wait here is bounded: it fails with an AssertionError naming what it waited for."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from comsa_migrate.sync.daemon import Daemon

T = TypeVar("T")


def _write_option_names() -> frozenset[str]:
    from comsa_migrate.pipeline.options import WriteOptions

    return frozenset(f.name for f in fields(WriteOptions))


#: running_daemon() takes WriteOptions fields beside SyncOptions ones
_WRITE_FIELDS = _write_option_names()


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Clock:
    """A clock for the code that takes one: it says ``now``, which the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_empty_tree(base: Path) -> Path:
    """An empty legacy tree, ``base/data`` with its jobs/, uploads/ and outputs/ folders."""
    data = base / "data"
    for folder in ("jobs", "uploads", "outputs"):
        (data / folder).mkdir(parents=True)
    return data


def job_doc(job_id: str, **fields: Any) -> dict[str, Any]:
    """A completed vacalibration job's JSON, with ``fields`` changed."""
    doc: dict[str, Any] = {
        "id": job_id,
        "type": "vacalibration",
        "status": "completed",
        "algorithm": "InterVA",
        "age_group": "neonate",
        "country": "Mozambique",
        "created_at": "2025-12-30 23:30:42",
        "started_at": "2025-12-30 23:30:44",
        "completed_at": "2025-12-30 23:30:47",
        "error": {},
        "result": {"files": {"summary": "calibration_summary.csv"}},
        "log": ["[2025-12-30 23:30:44] Starting", "[2025-12-30 23:30:47] Done"],
    }
    doc.update(fields)
    return doc


def new_job_id() -> str:
    return str(uuid.uuid4())


def write_job_atomically(data: Path, job_id: str, **fields: Any) -> Path:
    """Write ``job_doc(job_id, **fields)`` the way a careful writer does: a temporary file,
    then a rename (what the sync daemon sees as one event)."""
    final = data / "jobs" / f"{job_id}.json"
    temporary = data / "jobs" / f".{job_id}.json.tmp"
    temporary.write_text(json.dumps(job_doc(job_id, **fields)))
    os.rename(temporary, final)
    return final


def job_row(dsn: str, job_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT id::text, status, country FROM jobs WHERE id = %s", [job_id]
        ).fetchone()


def file_rows(dsn: str, job_id: str) -> dict[str, int]:
    """file_path -> file_size of one job's job_files rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT file_path, file_size FROM job_files WHERE job_id = %s", [job_id]
        ).fetchall()
    return {path: size for path, size in rows}


def daemon_problems(dsn: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT code, job_id FROM comsa_migrate.daemon_problems ORDER BY id"
        ).fetchall()
    return [(code, job_id) for code, job_id in rows]


@contextlib.contextmanager
def running_daemon(dsn: str, data: Path, *, ready: bool = True, **options: Any) -> Iterator[Daemon]:
    """A daemon in a thread, ready (caught up and watching) when this yields.

    On the way out it is stopped, and the test fails if the daemon raised, did not stop
    within 5 s, or left a thread behind.
    """
    from comsa_migrate.db.target import Target
    from comsa_migrate.pipeline.options import WriteOptions
    from comsa_migrate.render import formatting
    from comsa_migrate.sync.daemon import Daemon, SyncOptions

    # short debounce, grace, backoff and heartbeat keep the tests quick
    write = {name: options.pop(name) for name in list(options) if name in _WRITE_FIELDS}
    fast = SyncOptions(
        data,
        write=WriteOptions(**write),
        debounce=0.05,
        unparsable_grace=1.0,
        retry_min=0.05,
        retry_max=0.5,
        heartbeat_interval=0.2,
    )
    before = set(threading.enumerate())
    daemon = Daemon(Target(dsn, "--dsn"), replace(fast, **options), words=formatting)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="sync-daemon")
    thread.start()
    try:
        if ready:
            wait_until(lambda: daemon.ready.is_set() or failure, what="the daemon to be ready")
        if failure:
            raise failure[0]
        yield daemon
    finally:
        daemon.stop()
        thread.join(5)
        assert not thread.is_alive(), "the daemon did not stop within 5 s"
        try:
            wait_until(lambda: not _new_threads(before), 5, "the daemon's threads to end")
        except AssertionError:
            raise AssertionError(f"threads left behind: {_new_threads(before)}") from None
    if failure:
        raise failure[0]


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t not in before and not t.name.startswith("test-proxy")
    ]


class TcpProxy:
    """A TCP port on 127.0.0.1 that forwards to the test server (TCP or Unix socket).

    ``cut()`` drops every connection and refuses new ones, as a stopped server would;
    ``restore()`` lets connections through again.
    """

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/var/run/postgresql")
        port = int(params.get("port") or 5432)
        if host.startswith("/"):
            self._upstream: tuple[int, Any] = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._upstream = (socket.AF_INET, (host, port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        params.update(host="127.0.0.1", port=str(self.port), sslmode="disable")
        params.update(gssencmode="disable")
        params.pop("hostaddr", None)
        self.dsn = make_conninfo(**params)
        self._lock = threading.Lock()
        self._cut = False
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="test-proxy-accept")
        self._accepter.start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _shut(self._listener)
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _shut(client)
                continue
            try:
                upstream = socket.socket(self._upstream[0], socket.SOCK_STREAM)
                upstream.connect(self._upstream[1])
            except OSError:
                _shut(client)
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=_pump, args=(src, dst), name="test-proxy-pump")
                thread.start()
                self._threads.append(thread)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _shut(src)
        _shut(dst)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- legacy trees, rows and digests ---------------------------------------------------------


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        for table in ("jobs", "job_logs", "job_files")
    }


def row_digest(conn: psycopg.Connection[Any]) -> str:
    """One digest of every row, system columns included: any write changes it."""
    row = conn.execute(
        "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ("
        " SELECT xmin::text || ctid::text || j::text AS t FROM jobs j"
        " UNION ALL SELECT xmin::text || ctid::text || l::text FROM job_logs l"
        " UNION ALL SELECT xmin::text || ctid::text || f::text FROM job_files f) rows"
    ).fetchone()
    assert row is not None
    return str(row[0])


def write_job(
    data_dir: Path, job_id: str, doc: dict[str, Any] | None = None, **fields: Any
) -> Path:
    """Write jobs/<job_id>.json in place the way the legacy backend did (compact JSON): ``doc``
    with ``fields`` changed, by default a completed pipeline job with 10 log lines."""
    body = dict(doc) if doc is not None else _sample_job(job_id)
    body.update(fields)
    path = data_dir / "jobs" / f"{job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(body))
    return path


def edit_job_json(data_dir: Path, job_id: str, **changes: Any) -> Path:
    """Rewrite jobs/<job_id>.json in place with ``changes`` made to its fields."""
    path = data_dir / "jobs" / f"{job_id}.json"
    doc = orjson.loads(path.read_bytes())
    doc.update(changes)
    path.write_bytes(orjson.dumps(doc))
    return path


def make_tree(data_dir: Path, n_jobs: int) -> list[str]:
    """A legacy tree of ``n_jobs`` sample-shaped jobs, each with logs and two output files."""
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(n_jobs)]
    for job_id in ids:
        write_job(data_dir, job_id)
        out = data_dir / "outputs" / job_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "causes.csv").write_text("cause,n\nMalaria,3\nHIV,1\n")
        (out / "calibration_summary.csv").write_text("cause,csmf\nMalaria,0.75\n")
    (data_dir / "uploads").mkdir(exist_ok=True)
    return ids


def _sample_job(job_id: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "pipeline",
        "status": "completed",
        "algorithm": "InterVA",
        "age_group": "neonate",
        "country": "Mozambique",
        "created_at": "2025-12-30 23:10:53",
        "started_at": "2025-12-30 23:10:55",
        "completed_at": "2025-12-30 23:11:17",
        "error": {},
        "result": {"n_records": 81, "openva_csmf": {"Prematurity": 0.0123, "Birth asphyxia": 0.72}},
        "log": [f"[2025-12-30 23:10:{55 + i % 5:02d}] step {i}" for i in range(10)],
    }


def age_tree(data_dir: Path, seconds: float = 3600) -> None:
    """Move every mtime into the past, so that fingerprints are trusted (not racy)."""
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def stored_contents(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every job's rows in canonical form (serial ids left out), keyed by job id."""
    rows = conn.execute("SELECT id::text, comsa_migrate.stored_content(id) FROM jobs").fetchall()
    return dict(rows)


def job_counts(stdout: str) -> tuple[int, ...]:
    """(inserted, updated, unchanged, skipped, conflicts) from a backfill's summary."""
    words = " ".join(stdout.split())
    match = re.search(
        r"(\d+) inserted, (\d+) updated, (\d+) unchanged, (\d+) skipped, (\d+) conflicts", words
    )
    assert match is not None, stdout
    return tuple(int(n) for n in match.groups())


# -- a backfill in a subprocess, and holding it mid-run ---------------------------------------

#: the first key of apply_job()'s per-job advisory lock (schema/004, 005)
JOB_LOCK_CLASS = 1668115041


def finish(process: subprocess.Popen[str], timeout: float = 180) -> str:
    """The stdout of a spawned backfill, which must have exited 0."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stdout


def spawn_backfill(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``comsa-migrate backfill data_dir --quiet *args`` in a subprocess, output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "comsa_migrate", "backfill", str(data_dir), "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def in_reading_order(data_dir: Path) -> list[str]:
    """The job ids of data_dir/jobs in directory order: the order the backfill reads them."""
    return [Path(entry.name).stem for entry in os.scandir(data_dir / "jobs")]


def jobs_written(dsn: str) -> int:
    """How many jobs rows ``dsn`` holds; 0 while it cannot be read (no database or tables)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    except psycopg.Error:
        return 0
    assert row is not None
    return int(row[0])


def wait_for_jobs(dsn: str, minimum: int, timeout: float = 60) -> int:
    """Wait until ``dsn`` holds at least ``minimum`` jobs rows; return how many it holds."""
    return wait_until(
        lambda: (n := jobs_written(dsn)) >= minimum and n,
        timeout,
        f"at least {minimum} jobs rows in the database",
    )


class HeldJobs:
    """Session advisory locks on some jobs' per-job lock keys, taken on a connection of its
    own: a backfill that reaches one of these jobs waits inside its batch's transaction
    until they are released, so a test can stop it there, mid-run, whatever its speed."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.dbname = self.conn.info.dbname

    def hold(self, job_ids: Iterable[str]) -> int:
        """Lock the jobs not locked by a transaction in flight; return how many were locked.
        Names that are not job ids (a quirk's) are left out: no writer locks them."""
        job_ids = [job_id for job_id in job_ids if _is_uuid(job_id)]
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(%s, comsa_migrate.job_lock_key(i)))"
            " FROM unnest(%s::uuid[]) AS i",
            [JOB_LOCK_CLASS, list(job_ids)],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def waiting(self) -> int:
        """How many other sessions wait for one of the held locks."""
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s::oid AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            [JOB_LOCK_CLASS],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def wait_for_a_writer(self, timeout: float = 60) -> None:
        """Wait until a writer is stopped at one of the held jobs."""
        wait_until(self.waiting, timeout, "a writer to wait for a held job's lock")

    def release(self) -> None:
        """Let the writers go on; a connection the server already closed is fine."""
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def held_jobs(dsn: str, job_ids: Iterable[str] = ()) -> Iterator[HeldJobs]:
    """``HeldJobs`` on ``dsn`` holding ``job_ids``, released on the way out."""
    held = HeldJobs(dsn)
    try:
        if job_ids:
            held.hold(job_ids)
        yield held
    finally:
        held.release()
