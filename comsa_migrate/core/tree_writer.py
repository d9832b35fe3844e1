"""Writing files into a legacy tree, as restore and export do: each file whole or not at all,
checked against its sha256, never outside DATA_DIR, never over a different file unless forced.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``: hidden,
so that a backfill or the daemon never takes it for a job's file), checked, given its
stored mtime, then renamed over its name: a reader of the tree (the legacy backend, the
dashboard) sees the old file or the new one, never half of one.

Durability (``fsync``): "end", the default, syncs the file system once the run is done,
so a run that ended has all its files on disk, at a fraction of the cost of a sync per
file; a crash during the run may leave a file empty at its name, which the next run
counts as different (``--force`` replaces it). "each" fsyncs each file before its rename,
and each folder written into at the end, so that a file at its name is whole even after
a crash (about four times the time of "end" here: BENCHMARKS). "none" leaves it to the
kernel.

Paths come from the database, so they are not trusted: a path that is absolute, has an
empty, ``.`` or ``..`` component, or does not start with jobs/, uploads/ or outputs/ is
refused, and so is a path through a symbolic link (or anything but a folder) inside
DATA_DIR: every folder is opened with O_NOFOLLOW from DATA_DIR down, and the file is made
and renamed relative to its folder's descriptor, so a link put in place meanwhile is not
followed either.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from comsa_migrate.core.layout import FOLDER_FLAGS, JOBS, NOT_FOLLOWED, OUTPUTS, UPLOADS
from comsa_migrate.core.tree_summary import FileOutcome
from comsa_migrate.problems import Problem

__all__ = ["TreeFile", "TreeWriteOptions", "TreeWriter", "unsafe_reason", "write_files"]

log = logging.getLogger(__name__)

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TreeFile:
    """One file to put in the tree: where, which content, and how to read that content."""

    path: str  # relative to DATA_DIR, "/"-separated
    job_id: str | None
    sha256: str  # of the content it must have
    size: int
    mtime_ns: int | None  # the time to give it (the one it had when stored); None: now
    content: Callable[[], Iterable[bytes]]  # its bytes, in chunks; KeyError: not stored
    notes: tuple[Problem, ...] = ()  # found while making it, told with its outcome


@dataclass(frozen=True, slots=True)
class TreeWriteOptions:
    """How a tree is written."""

    force: bool = False  # replace a file that differs
    dry_run: bool = False  # decide, write nothing
    fsync: str = "end"  # "each" file, once at the "end", or "none" (see above)
    workers: int = 4  # threads writing files at once


class _Refused(Exception):
    """The file is not written: ``code`` is its problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def unsafe_reason(path: str, job_id: str | None = None) -> str | None:
    """Why ``path`` (from the database) may not be written under DATA_DIR for the job
    ``job_id``, or None: it must be jobs/<id>.json, uploads/<id>/... or outputs/<id>/...
    (the id in any case)."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return "is not a relative path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, . or .. component"
    if parts[0] not in (JOBS, UPLOADS, OUTPUTS) or len(parts) < 2:
        return "is not under jobs/, uploads/ or outputs/"
    if job_id is not None:
        own = parts[1].rpartition(".")[0] if parts[0] == JOBS else parts[1]
        if own.lower() != job_id.lower() or (parts[0] == JOBS) != (len(parts) == 2):
            return f"is not a file of the job {job_id}"
    return None


class TreeWriter:
    """Writes TreeFiles under one DATA_DIR; thread-safe: each write opens its own folders."""

    def __init__(self, data_dir: Path, options: TreeWriteOptions) -> None:
        self.data_dir = data_dir
        self.options = options
        if not options.dry_run:
            data_dir.mkdir(parents=True, exist_ok=True)
        self._written_dirs: set[str] = set()
        self._lock = threading.Lock()

    def write(self, item: TreeFile | Callable[[], TreeFile]) -> FileOutcome:
        """Put ``item`` in place (made first, when it is a function that makes it), or say
        why not; never raises for the tree's or the content's faults."""
        if not isinstance(item, TreeFile):
            item = item()
        try:
            action, problem = self._write(item), None
        except _Refused as exc:
            problem = Problem(exc.code, str(exc), item.job_id, item.path)
            action = "kept" if exc.code == "file_differs" else "failed"
        except OSError as exc:
            message = f"cannot write it: {exc.strerror or exc}"
            problem = Problem("write_failed", message, item.job_id, item.path)
            action = "failed"
        return FileOutcome(item.path, item.job_id, action, item.size, problem, item.notes)

    def finish(self) -> None:
        """Make the renames durable: one sync at the "end", or each folder (with "each")."""
        if self.options.dry_run or self.options.fsync == "none":
            return
        if self.options.fsync == "end":
            _sync_file_system(self.data_dir)
            return
        for folder in sorted(self._written_dirs):
            try:
                fd = os.open(self.data_dir / folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _write(self, item: TreeFile) -> str:
        reason = unsafe_reason(item.path, item.job_id)
        if reason is not None:
            raise _Refused("unsafe_path", f"the stored path {reason}; not written")
        parts = item.path.split("/")
        parent = self._open_parent(parts[:-1], create=not self.options.dry_run)
        if parent is None:  # a dry run, and the folder is not there yet
            return "written"
        try:
            replacing = self._existing(parent, parts[-1], item)
            if replacing is None:
                return "unchanged"
            if not self.options.dry_run:
                self._put(parent, parts[-1], item)
                if self.options.fsync == "each":
                    with self._lock:
                        self._written_dirs.add("/".join(parts[:-1]))
            return "replaced" if replacing else "written"
        finally:
            os.close(parent)

    def _open_parent(self, folders: list[str], *, create: bool) -> int | None:
        """DATA_DIR's descendant ``folders``, opened without following a link; made when
        missing and ``create``, else None."""
        try:
            fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise
            return None  # a dry run into a DATA_DIR not made yet
        try:
            for depth, name in enumerate(folders):
                try:
                    child = os.open(name, FOLDER_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    # another thread may have made it: then it is opened as it is
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    child = self._open_folder(name, fd, folders[: depth + 1])
                except OSError as exc:
                    if exc.errno in NOT_FOLLOWED:
                        raise _Refused("unsafe_path", _not_a_folder(folders[: depth + 1])) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _open_folder(name: str, dir_fd: int, shown: list[str]) -> int:
        try:
            return os.open(name, FOLDER_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in NOT_FOLLOWED:
                raise _Refused("unsafe_path", _not_a_folder(shown)) from None
            raise

    def _existing(self, parent: int, name: str, item: TreeFile) -> bool | None:
        """False: nothing there; True: a different file, to replace (forced); None: the same
        bytes are there. Raises _Refused for a different file not forced, or a link or
        anything but a file at the name."""
        try:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(found.st_mode):
            raise _Refused("unsafe_path", "a symbolic link is where the file belongs; not followed")
        if not stat.S_ISREG(found.st_mode):
            raise _Refused("unsafe_path", "something other than a file is where the file belongs")
        if found.st_size == item.size and _sha256_at(parent, name) == item.sha256:
            return None
        if not self.options.force:
            raise _Refused(
                "file_differs", "a different file is there; left alone (--force replaces it)"
            )
        return True

    def _put(self, parent: int, name: str, item: TreeFile) -> None:
        temp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temp, _TEMP_FLAGS, 0o666, dir_fd=parent)
        renamed = False
        try:
            digest, size = _copy_in(fd, item)
            if digest != item.sha256 or size != item.size:
                raise _Refused(
                    "stored_content_corrupt",
                    f"the stored content has {size:,} bytes with sha256 {digest[:12]}…, "
                    f"not {item.size:,} bytes with {item.sha256[:12]}…; not written",
                )
            if item.mtime_ns is not None:
                os.utime(fd, ns=(item.mtime_ns, item.mtime_ns))
            if self.options.fsync == "each":
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            renamed = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not renamed:
                _unlink_quietly(temp, parent)


def _copy_in(fd: int, item: TreeFile) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in item.content():
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    except KeyError:
        raise _Refused(
            "stored_content_missing", "the file store does not hold its content; not written"
        ) from None
    return digest.hexdigest(), size


def _sha256_at(parent: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    try:
        while chunk := os.read(fd, _HASH_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _sync_file_system(data_dir: Path) -> None:
    """syncfs(2) of DATA_DIR's file system where there is one (Linux), else sync(2)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _unlink_quietly(name: str, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove the temporary file %s: %s", name, exc.strerror)


def _not_a_folder(folders: list[str]) -> str:
    return (
        f"{'/'.join(folders)} is a symbolic link or not a folder; not followed, nothing "
        "written through it"
    )


def write_files(
    writer: TreeWriter,
    items: Iterable[TreeFile | Callable[[], TreeFile]],
    on_outcome: Callable[[FileOutcome], None],
    stop: threading.Event | None = None,
) -> bool:
    """Write ``items`` with ``writer.options.workers`` threads, at most a few per thread in
    flight (so memory does not grow with the tree); ``on_outcome`` is called on this
    thread, once per file. Returns False when ``stop`` ended it early."""
    limit = writer.options.workers * 4
    pending: set[Future[FileOutcome]] = set()

    def drain(until: int) -> None:
        while len(pending) > until:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                on_outcome(future.result())

    stopped = False
    with ThreadPoolExecutor(writer.options.workers, thread_name_prefix="tree-writer") as pool:
        try:
            for item in items:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                pending.add(pool.submit(writer.write, item))
                drain(limit)
        finally:
            drain(0)
    writer.finish()
    return not stopped
