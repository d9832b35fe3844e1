"""A scan's job JSONs spread over forked processes, given back in the scan's own order.

A rerun's scan is system calls and the Python around them, one job after another on one
core. With N workers, the list of jobs/ is cut into chunks of CHUNK entries; worker k, a
forked copy of this process, scans chunks k, k+N, k+2N… and sends each back through its
own pipe, and this process reads the chunks in turn. What comes out, and in which order,
is what one process would give. A worker only reads the file system and writes its pipe;
it keeps no other descriptor of this process (no database connection).

A worker that dies, fails or cannot be forked leaves the rest of its chunks to this
process, which scans them itself: the scan is never short of a job. Closing the iterator
early kills and reaps the workers; a worker whose parent is gone stops at its next write.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from comsa_migrate.core.layout import FileStat, JobSource, ScanItem
from comsa_migrate.problems import Problem

try:
    import fcntl
except ImportError:  # no POSIX descriptors, and no os.fork either: no workers
    fcntl = None  # type: ignore[assignment]

__all__ = ["CHUNK", "can_fork", "scan_in_workers", "usable_cores"]

log = logging.getLogger(__name__)

#: entries of jobs/ per chunk: a worker's answer for one is about 40 KB, within a pipe
CHUNK = 100
_LENGTH_BYTES = 8
_PIPE_BYTES = 1 << 20  # a worker may run this far ahead of the reader, where Linux allows

Task = TypeVar("Task")


def can_fork() -> bool:
    return hasattr(os, "fork")


def usable_cores() -> int:
    """The cores this process may run on (taskset and cpusets count), at least one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def scan_in_workers(
    tasks: Sequence[Task | Problem], scan_one: Callable[[Task], ScanItem], workers: int
) -> Iterator[ScanItem]:
    """``scan_one(task)`` for every task, and every Problem as it is, in order, scanned in
    up to ``workers`` forked processes: no more than there are chunks, and none for one
    chunk (this process would only wait for it)."""
    chunks = range(0, len(tasks), CHUNK)
    workers = min(workers, len(chunks))
    if workers < 2:
        yield from (task if isinstance(task, Problem) else scan_one(task) for task in tasks)
        return
    started: list[_Worker | None] = []  # worker k answers chunks k, k + workers…
    try:
        for number in range(workers):
            started.append(_Worker.start(tasks, scan_one, number, workers))
        for number, first in enumerate(chunks):
            chunk = tasks[first : first + CHUNK]
            expected = sum(1 for task in chunk if not isinstance(task, Problem))
            worker = started[number % workers]
            scanned = None if worker is None else worker.take(expected)
            if scanned is None:  # no worker, or a failed one: this process scans the chunk
                scanned = [scan_one(task) for task in chunk if not isinstance(task, Problem)]
            answers = iter(scanned)
            for task in chunk:
                yield task if isinstance(task, Problem) else next(answers)
    finally:
        for worker in started:
            if worker is not None:
                worker.stop()


class _Worker:
    """One forked scanner, seen from this process: its pid and the pipe it answers on."""

    def __init__(self, number: int, pid: int, reader: Any) -> None:
        self.number, self.pid = number, pid
        self.reader = reader  # a buffered binary file; None once the worker is given up
        self.reaped = False

    @classmethod
    def start(
        cls,
        tasks: Sequence[Any],
        scan_one: Callable[[Any], ScanItem],
        number: int,
        workers: int,
    ) -> _Worker | None:
        """Worker ``number`` of ``workers``, forked; None when no process could be had."""
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            log.warning("could not start scan worker %d: %s", number + 1, exc.strerror)
            return None
        with contextlib.suppress(AttributeError, OSError):  # Linux only, a larger buffer
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        try:
            pid = os.fork()
        except OSError as exc:  # too many processes, or no memory for one more
            os.close(read_fd)
            os.close(write_fd)
            log.warning("could not start scan worker %d: %s", number + 1, exc.strerror)
            return None
        if pid == 0:  # the worker: never returns
            _work(tasks, scan_one, number, workers, write_fd)
        os.close(write_fd)
        return cls(number, pid, os.fdopen(read_fd, "rb", buffering=_PIPE_BYTES))

    def take(self, expected: int) -> list[ScanItem] | None:
        """The worker's next chunk, of ``expected`` items; None when it cannot give it."""
        if self.reader is None:
            return None
        try:
            header = self.reader.read(_LENGTH_BYTES)
            length = int.from_bytes(header, "little")
            payload = self.reader.read(length) if len(header) == _LENGTH_BYTES else b""
            if payload and len(payload) == length:  # not cut short by the worker's end
                scanned = [_decode(item) for item in marshal.loads(payload)]
                if len(scanned) == expected:
                    return scanned
        except Exception:  # noqa: BLE001 - a garbled answer is a failed worker: scan here
            pass
        status = self.stop()
        log.warning(
            "scan worker %d (pid %d) %s; this process scans the rest of its share of jobs/",
            self.number + 1,
            self.pid,
            _how_it_ended(status),
        )
        return None

    def stop(self) -> int | None:
        """Close the pipe, kill the worker if it is still at work, and reap it; its wait
        status, when this call reaped it."""
        if self.reader is not None:
            with contextlib.suppress(OSError):
                self.reader.close()
            self.reader = None
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)  # not yet reaped: the pid is still its own
        if self.reaped:
            return None
        self.reaped = True
        try:
            return os.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            return None


def _keep_only(write_fd: int) -> int:
    """In a worker, close every descriptor but its own pipe, which it returns (moved above
    the standard three): not the siblings' pipes, which must close when the parent dies,
    nor the parent's database connections, whose sessions (and locks) must end with the
    parent. Standard input and output become /dev/null, so that whoever reads the
    parent's output is not kept waiting by a worker."""
    assert fcntl is not None  # only where os.fork is
    pipe = fcntl.fcntl(write_fd, fcntl.F_DUPFD, 3)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    os.closerange(3, pipe)
    os.closerange(pipe + 1, _open_max())
    return pipe


def _open_max() -> int:
    """One past the highest descriptor this process may have open."""
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 1024)
    except (AttributeError, OSError, ValueError):
        return 65536


def _how_it_ended(status: int | None) -> str:
    """A worker's end, as its wait status tells it (a live one was killed by SIGKILL)."""
    if status is None:
        return "is gone"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in set(signal.Signals) else number
        return f"was killed by signal {name}"
    return f"exited with status {os.WEXITSTATUS(status)} before it answered"


def _work(
    tasks: Sequence[Any],
    scan_one: Callable[[Any], ScanItem],
    number: int,
    workers: int,
    write_fd: int,
) -> None:
    """The worker's whole life: scan its chunks, write each, and exit without a word."""
    status = 1
    try:
        write_fd = _keep_only(write_fd)
        # Ctrl-C, or a stop sent to the whole group (systemd's), is the parent's to handle:
        # it stops the workers it no longer needs, and a worker whose parent died stops at
        # its next write
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        # the pipe is closed by the process's exit, once its status is set: a parent that
        # meets the pipe's end early (this worker failed) reaps that status, not a SIGKILL
        out = os.fdopen(write_fd, "wb", closefd=False)
        for first in range(number * CHUNK, len(tasks), workers * CHUNK):
            payload = marshal.dumps(
                [
                    _encode(scan_one(task))
                    for task in tasks[first : first + CHUNK]
                    if not isinstance(task, Problem)
                ]
            )
            out.write(len(payload).to_bytes(_LENGTH_BYTES, "little"))
            out.write(payload)
            out.flush()
        status = 0
    finally:
        os._exit(status)  # no atexit, no buffers of the parent's flushed twice


def _encode(item: ScanItem) -> tuple[Any, ...] | list[Any]:
    """An item as marshal carries it: a Problem as a tuple of its fields, a JobSource as a
    list of its fields, with its files as plain tuples."""
    if isinstance(item, Problem):
        return (item.code, item.message, item.job_id, item.path)
    fields = list(item)
    fields[_FILES] = [tuple(file) for file in item.files]
    fields[_PROBLEMS] = [_encode(problem) for problem in item.problems]
    return fields


_FILES = JobSource._fields.index("files")
_PROBLEMS = JobSource._fields.index("problems")
_file_stat = partial(tuple.__new__, FileStat)  # FileStat._make, without its Python frame
_job_source = partial(tuple.__new__, JobSource)


def _decode(item: tuple[Any, ...] | list[Any]) -> ScanItem:
    if isinstance(item, tuple):
        return Problem(*item)
    item[_FILES] = tuple(map(_file_stat, item[_FILES]))
    item[_PROBLEMS] = tuple(Problem(*problem) for problem in item[_PROBLEMS])
    return _job_source(item)
