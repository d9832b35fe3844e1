"""Writing files into a legacy tree, as restore and export do: each file whole or not at all,
checked against its sha256, never outside DATA_DIR, never over a different file unless forced.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``, or
``.<random>.tmp`` for a name too long for that: hidden, so that a backfill or the daemon
never takes it for a job's file), checked, given its stored mtime, then published: linked
to its name when nothing was there (link(2) fails if a file appeared meanwhile, which is
then judged as one found before), renamed over the file it replaces otherwise. A reader
of the tree (the legacy backend, the dashboard) sees the old file or the new one, never
half of one.

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
DATA_DIR: every folder is opened with O_NOFOLLOW from DATA_DIR down (once for a task's
few files: core/tree_folders.py), and the file is made and renamed relative to its
folder's descriptor, so a link put in place meanwhile is not followed either.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from comsa_migrate.core.layout import JOBS, OUTPUTS, UPLOADS
from comsa_migrate.core.tree_folders import FolderRefused, OpenFolders
from comsa_migrate.core.tree_io import (
    NotWritten,
    RunFault,
    copy_in,
    sha256_at,
    sync_file_system,
    unlink_quietly,
)
from comsa_migrate.core.tree_summary import FileOutcome
from comsa_migrate.problems import Problem

__all__ = [
    "LaterFile",
    "NotWritten",
    "RunFault",
    "TreeFile",
    "TreeWriteOptions",
    "TreeWriter",
    "unsafe_reason",
    "WriteItem",
    "write_files",
]

log = logging.getLogger(__name__)

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: files written by one task of a writer thread, through the same folder descriptors
_FILES_PER_TASK = 32


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
    at_hand: bool = False  # its content is in memory: no store is read to write it
    #: the sha256 of a content this tool wrote at the path before (the stored one): a file
    #: with it is replaced without --force, being no one's edit
    replaceable: str | None = None


@dataclass(frozen=True, slots=True)
class LaterFile:
    """A TreeFile made by the writer thread (``make``); ``at_hand``: made without reading
    a store."""

    make: Callable[[], TreeFile]
    at_hand: bool = False


#: a file to write: made already, or made by the writer thread
WriteItem = TreeFile | LaterFile | Callable[[], TreeFile]


@dataclass(frozen=True, slots=True)
class TreeWriteOptions:
    """How a tree is written."""

    force: bool = False  # replace a file that differs
    dry_run: bool = False  # decide, write nothing
    fsync: str = "end"  # "each" file, once at the "end", or "none" (see above)
    workers: int = 4  # threads writing files at once


#: the longest file name, in bytes, that Linux's file systems take
_NAME_MAX = 255


def unsafe_reason(path: str, job_id: str | None = None) -> str | None:
    """Why ``path`` (from the database) may not be written under DATA_DIR for the job
    ``job_id``, or None: it must be jobs/<id>.json, or a file in uploads/<id>/ or
    outputs/<id>/ (the id in any case, and the .json too, as the scan takes it)."""
    if not path or path.startswith("/") or "\x00" in path:
        return "is not a relative path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, . or .. component"
    if parts[0] not in (JOBS, UPLOADS, OUTPUTS):
        return "is not under jobs/, uploads/ or outputs/"
    if parts[0] == JOBS:
        stem, dot, suffix = parts[-1].rpartition(".")
        if len(parts) != 2 or not dot or suffix.lower() != "json":
            return "is not jobs/<id>.json"
        own = stem
    elif len(parts) < 3:  # uploads/<id> itself: a file there would block the job's folder
        return "is not a file in uploads/<id>/ or outputs/<id>/"
    else:
        own = parts[1]
    if job_id is not None and own.lower() != job_id.lower():
        return f"is not a file of the job {job_id}"
    return None


class TreeWriter:
    """Writes TreeFiles under one DATA_DIR; thread-safe: each call opens its own folders."""

    def __init__(self, data_dir: Path, options: TreeWriteOptions) -> None:
        self.data_dir = data_dir
        self.options = options
        if not options.dry_run:
            data_dir.mkdir(parents=True, exist_ok=True)
        self._written_dirs: set[str] = set()
        self._lock = threading.Lock()
        # temporary names: random per run, then counted (no random draw per file); O_EXCL
        # still refuses a name that is there
        self._temp_prefix = secrets.token_hex(3)
        self._temp_count = itertools.count()
        self.fault: RunFault | None = None  # what stopped the run, if anything did

    def write(self, item: WriteItem) -> FileOutcome:
        """Put ``item`` in place (made first, when it is a function that makes it), or say
        why not; never raises for the tree's or the content's faults."""
        return self.write_many((item,))[0]

    def write_many(self, items: Iterable[WriteItem]) -> list[FileOutcome]:
        """write() each of ``items``, in order, through folders opened once for all of them;
        a RunFault ends the task: it is kept (``fault``), and the files before it told."""
        folders = OpenFolders(self.data_dir, create=not self.options.dry_run)
        outcomes: list[FileOutcome] = []
        try:
            for item in items:
                if self.fault is not None:
                    break
                outcomes.append(self._outcome(item, folders))
        except RunFault as exc:
            with self._lock:
                self.fault = self.fault or exc
        finally:
            folders.close()
        return outcomes

    def _outcome(self, item: WriteItem, folders: OpenFolders) -> FileOutcome:
        if isinstance(item, LaterFile):
            made = _made(item.make)
        elif not isinstance(item, TreeFile):
            made = _made(item)
        else:
            made = item
        if isinstance(made, FileOutcome):
            return made
        item = made
        try:
            action, problem = self._write(item, folders), None
        except NotWritten as exc:
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
            sync_file_system(self.data_dir)
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

    def _write(self, item: TreeFile, folders: OpenFolders) -> str:
        reason = unsafe_reason(item.path, item.job_id)
        if reason is not None:
            raise NotWritten("unsafe_path", f"the stored path {reason}; not written")
        *names, name = item.path.split("/")
        try:
            parent = folders.open(tuple(names))
        except FolderRefused as exc:
            raise NotWritten("unsafe_path", str(exc)) from None
        if parent is None:  # a dry run, and the folder is not there yet
            return "written"
        replacing = self._existing(parent, name, item)
        if replacing is None:
            return "unchanged"
        if self.options.dry_run:
            return "replaced" if replacing else "written"
        action = self._put(parent, name, item, replacing)
        if self.options.fsync == "each" and action != "unchanged":
            with self._lock:
                self._written_dirs.add("/".join(names))
        return action

    def _existing(self, parent: int, name: str, item: TreeFile) -> bool | None:
        """False: nothing there; True: a file to replace (forced, or the tool's own earlier
        copy: ``replaceable``); None: the same bytes are there. Raises NotWritten for a
        different file not forced, or a link or anything but a file at the name."""
        try:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(found.st_mode):
            raise NotWritten(
                "unsafe_path", "a symbolic link is where the file belongs; not followed"
            )
        if not stat.S_ISREG(found.st_mode):
            raise NotWritten("unsafe_path", "something other than a file is where the file belongs")
        if self.options.force:
            if found.st_size == item.size and sha256_at(parent, name) == item.sha256:
                return None
            return True
        if found.st_size == item.size or item.replaceable is not None:
            digest = sha256_at(parent, name)
            if digest == item.sha256 and found.st_size == item.size:
                return None
            if digest == item.replaceable:
                return True
        raise NotWritten(
            "file_differs", "a different file is there; left alone (--force replaces it)"
        )

    def _put(self, parent: int, name: str, item: TreeFile, replacing: bool) -> str:
        """Write the temporary file, check it, and publish it: renamed over the file to
        replace, else linked to its name, which fails if a file appeared there meanwhile
        (then judged as one found before): never over a file not meant to be replaced."""
        unique = f"{self._temp_prefix}{next(self._temp_count):06x}"
        temp = f".{name}.{unique}.tmp"
        if len(os.fsencode(temp)) > _NAME_MAX:  # a long name: hidden and unique without it
            temp = f".{unique}.tmp"
        fd = os.open(temp, _TEMP_FLAGS, 0o666, dir_fd=parent)
        try:
            digest, size = copy_in(fd, item.content)
            if digest != item.sha256 or size != item.size:
                raise NotWritten(
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
            if not replacing and not self.options.force:
                try:
                    os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
                    return "written"
                except FileExistsError:  # made since it was looked at (a legacy processor)
                    if self._existing(parent, name, item) is None:
                        return "unchanged"
                    # the tool's own earlier copy, put back meanwhile: replaced as it would be
                    replacing = True
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            temp = ""
            return "replaced" if replacing else "written"
        finally:
            if fd >= 0:
                os.close(fd)
            if temp:
                unlink_quietly(temp, parent)


def _made(make: Callable[[], TreeFile]) -> TreeFile | FileOutcome:
    """The TreeFile ``make`` makes, or the outcome of a file it could not make."""
    try:
        return make()
    except NotWritten as exc:
        problem = Problem(exc.code, str(exc), exc.job_id, exc.path)
        return FileOutcome(exc.path or "", exc.job_id, "failed", 0, problem)


def write_files(
    writer: TreeWriter,
    items: Iterable[WriteItem],
    on_outcome: Callable[[FileOutcome], None],
    stop: threading.Event | None = None,
) -> bool:
    """Write ``items``, a few files to a task (they share their folders' descriptors), at
    most a few tasks per thread in flight (so memory does not grow with the tree);
    ``on_outcome`` is called on this thread, once per file. Returns False when ``stop``
    ended it early.

    Files whose content is at hand are written by one thread: more threads only contend
    for the interpreter and the folders (a restore of 3,000 jobs from the `db` store took
    0.7 s in one thread, 1.0 s in four). Files read from a store, and every file with
    ``fsync="each"``, which waits on the disk, go to ``writer.options.workers`` threads.

    Raises the RunFault a file's content raised (after the files in flight are told), and
    whatever reading ``items`` raises; either way the files written are synced.
    """
    workers = writer.options.workers
    limit = workers * 2 + 2
    pending: set[Future[list[FileOutcome]]] = set()

    def drain(until: int) -> None:
        while len(pending) > until:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                for outcome in future.result():
                    on_outcome(outcome)

    one_thread = writer.options.fsync != "each"
    stopped = False
    tasks: tuple[list[WriteItem], list[WriteItem]] = ([], [])  # at hand, read from a store
    try:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="tree-writer-at-hand") as at_hand,
            ThreadPoolExecutor(workers, thread_name_prefix="tree-writer") as pool,
        ):
            try:
                for item in items:
                    if stop is not None and stop.is_set():
                        stopped = True
                        break
                    if writer.fault is not None:
                        break
                    task = tasks[0] if one_thread and getattr(item, "at_hand", False) else tasks[1]
                    task.append(item)
                    if len(task) == _FILES_PER_TASK:
                        runner = at_hand if task is tasks[0] else pool
                        pending.add(runner.submit(writer.write_many, list(task)))
                        task.clear()
                        drain(limit)
                if not stopped and writer.fault is None:
                    for task, runner in zip(tasks, (at_hand, pool), strict=True):
                        if task:
                            pending.add(runner.submit(writer.write_many, task))
            finally:
                drain(0)
    finally:
        # what was written before a fault (or an error reading the rows) is made durable too
        writer.finish()
    if writer.fault is not None:
        raise writer.fault
    return not stopped
