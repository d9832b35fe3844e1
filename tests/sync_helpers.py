"""What the sync daemon's tests share: a tree builder, a daemon in a thread, a deadline
helper, and a TCP proxy that can cut the daemon off from PostgreSQL and let it back."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from comsa_migrate.db.target import Target
from comsa_migrate.sync.daemon import Daemon, SyncOptions

T = TypeVar("T")

#: options that keep the tests quick: short debounce, settle, backoff and heartbeat
FAST = SyncOptions(
    Path("."),
    debounce=0.05,
    settle=1.0,
    retry_min=0.05,
    retry_max=0.5,
    heartbeat_interval=0.2,
)


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


def make_tree(base: Path) -> Path:
    data = base / "data"
    for folder in ("jobs", "uploads", "outputs"):
        (data / folder).mkdir(parents=True)
    return data


def job_doc(job_id: str, **fields: Any) -> dict[str, Any]:
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


def write_job(data: Path, job_id: str, **fields: Any) -> Path:
    """Write a job JSON the way a careful writer does: a temporary file, then a rename."""
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
    before = set(threading.enumerate())
    daemon = Daemon(Target(dsn, "--dsn"), replace(FAST, data_dir=data, **options))
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
