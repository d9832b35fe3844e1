"""The legacy layout: which jobs exist, their JSON and files, and stat-only fingerprints."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .errors import DataDirError
from .problems import Problem

__all__ = [
    "FileStat",
    "count_job_files",
    "JobSource",
    "ScanItem",
    "is_ignored_name",
    "job_source",
    "is_job_id",
    "read_job_json",
    "scan",
    "utc_from_ns",
]

#: bump when normalisation changes, so that every fingerprint changes and jobs are re-read
NORMALISER_VERSION = "2"

#: modifications this close to a scan are not trusted to show in mtime (see JobSource)
RACY_WINDOW_NS = 2_000_000_000

JOBS, UPLOADS, OUTPUTS = "jobs", "uploads", "outputs"
FILE_TYPE_OF_FOLDER = {UPLOADS: "input", OUTPUTS: "output"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_TEMP_SUFFIXES = ("~", ".swp", ".tmp", ".part")
_EPOCH = datetime(1970, 1, 1)


def utc_from_ns(ns: int) -> datetime:
    """A stat time (ns since the epoch) as a naive UTC timestamp, exact to the microsecond."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def is_job_id(name: str) -> bool:
    return _UUID.match(name) is not None


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor or temporary files are never part of the job store."""
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


@dataclass(frozen=True, slots=True)
class FileStat:
    """One regular file under uploads/<id>/ or outputs/<id>/, as stat saw it."""

    file_type: str  # "input" or "output"
    file_name: str
    file_path: str  # relative to DATA_DIR, "/"-separated
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class JobSource:
    """A job JSON on disk and the files that belong to it: everything known before reading."""

    job_id: str  # lower-case UUID taken from the file name
    json_path: str  # relative to DATA_DIR
    json_size: int
    json_mtime_ns: int
    json_ino: int
    files: tuple[FileStat, ...]
    problems: tuple[Problem, ...] = ()
    scanned_ns: int = field(default_factory=time.time_ns)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", self._fingerprint())

    @property
    def racy(self) -> bool:
        return self.fingerprint.startswith("racy-")

    def _fingerprint(self) -> str:
        """A digest of what stat saw; "racy-" marks one that must not be trusted later.

        A file written again within the file system's timestamp granularity of being
        stat'ed can keep its mtime and size; like git's racy-clean check, a fingerprint
        taken that close to a modification is recorded so that it never matches, and the
        job is re-read (and found unchanged) on the next run.
        """
        digest = hashlib.blake2b(digest_size=16)
        digest.update(
            f"{NORMALISER_VERSION}|{self.json_path}|{self.json_size}|"
            f"{self.json_mtime_ns}|{self.json_ino}".encode()
        )
        for f in self.files:
            digest.update(f"\n{f.file_type}|{f.file_path}|{f.size}|{f.mtime_ns}".encode())
        newest = max([self.json_mtime_ns, *(f.mtime_ns for f in self.files)])
        racy = self.scanned_ns - newest < RACY_WINDOW_NS
        return ("racy-" if racy else "") + digest.hexdigest()


ScanItem = JobSource | Problem


def scan(data_dir: Path) -> Iterator[ScanItem]:
    """Walk DATA_DIR once: yield a JobSource per job JSON, and a Problem for everything else.

    Memory stays flat: nothing is collected across jobs.
    """
    _check_data_dir(data_dir)
    yield from _scan_top_level(data_dir)
    jobs_dir = data_dir / JOBS
    if _is_real_dir(jobs_dir):
        yield from _scan_jobs(data_dir, jobs_dir)
    for folder in (UPLOADS, OUTPUTS):
        if _is_real_dir(data_dir / folder):
            yield from _scan_orphans(data_dir, folder)


def job_source(data_dir: Path, job_id: str) -> ScanItem | None:
    """The current JobSource of one job (or the problem stopping it); None if its JSON is gone."""
    rel = f"{JOBS}/{job_id}.json"
    if os.path.islink(data_dir / JOBS):
        return Problem("symlink_skipped", "symbolic link not followed", path=JOBS)
    try:
        st = os.lstat(data_dir / rel)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem("unreadable", _os_reason(exc), job_id, rel)
    if stat.S_ISLNK(st.st_mode):
        return Problem("symlink_skipped", "symbolic link not followed", path=rel)
    if not stat.S_ISREG(st.st_mode):
        return Problem("stray_file", "not a job JSON", path=rel)
    return _job_source(data_dir, _file_folders(data_dir), job_id, rel, st)


def read_job_json(data_dir: Path, source: JobSource, max_bytes: int) -> bytes | Problem:
    """The bytes of a job JSON, or the problem that stops them from being read."""
    path = data_dir / source.json_path
    try:
        # never follow a symlink, nor wait on a FIFO, put there since the scan
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Problem("unreadable", "not a regular file", source.job_id, source.json_path)
            data = b""
            if st.st_size <= max_bytes:
                # read(n) allocates n bytes first: ask for the size stat gave, plus one
                # byte to notice a file still growing, and only then for the rest
                data = fh.read(st.st_size + 1)
                if len(data) > st.st_size:
                    data += fh.read(max_bytes + 1 - len(data))
            size = max(st.st_size, len(data))
            if size > max_bytes:
                return Problem(
                    "file_too_large",
                    f"{size} bytes is over the limit of {max_bytes} (--max-json-bytes)",
                    source.job_id,
                    source.json_path,
                )
            return data
    except OSError as exc:
        return Problem("unreadable", _os_reason(exc), source.job_id, source.json_path)


def _check_data_dir(data_dir: Path) -> None:
    if not data_dir.exists():
        raise DataDirError(f"{data_dir}: no such folder")
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a folder")
    if not os.access(data_dir, os.R_OK | os.X_OK):
        raise DataDirError(f"{data_dir}: permission denied")
    if not any((data_dir / name).is_dir() for name in (JOBS, UPLOADS, OUTPUTS)):
        raise DataDirError(
            f"{data_dir}: not a legacy data folder (it has no jobs/, uploads/ or outputs/)"
        )


def _scan_top_level(data_dir: Path) -> Iterator[Problem]:
    for entry in _entries(data_dir):
        if entry.name in (JOBS, UPLOADS, OUTPUTS) and entry.is_dir(follow_symlinks=False):
            continue
        if entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=entry.name)
        else:
            yield Problem("stray_file", "not part of the job store", path=entry.name)


def _scan_jobs(data_dir: Path, jobs_dir: Path) -> Iterator[ScanItem]:
    folders = _file_folders(data_dir)
    for entry in _entries(jobs_dir, ordered=False):
        rel = f"{JOBS}/{entry.name}"
        if entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=rel)
            continue
        stem, dot, suffix = entry.name.rpartition(".")
        if not entry.is_file(follow_symlinks=False) or not (dot and suffix.lower() == "json"):
            yield Problem("stray_file", "not a job JSON", path=rel)
            continue
        if not is_job_id(stem):
            yield Problem("invalid_job_dir", "job JSON whose name is not a UUID", path=rel)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            yield Problem("unreadable", _os_reason(exc), stem.lower(), rel)
            continue
        yield _job_source(data_dir, folders, stem, rel, st)


def _file_folders(data_dir: Path) -> dict[str, str]:
    """uploads/ and outputs/, with their file types, where they are real folders (not links)."""
    return {f: t for f, t in FILE_TYPE_OF_FOLDER.items() if _is_real_dir(data_dir / f)}


def _job_source(
    data_dir: Path, folders: dict[str, str], stem: str, rel: str, st: os.stat_result
) -> ScanItem:
    job_id = stem.lower()
    files: list[FileStat] = []
    problems: list[Problem] = []
    root = os.fspath(data_dir)
    for folder, file_type in folders.items():
        job_rel = f"{folder}/{stem}"
        job_dir = f"{root}/{job_rel}"
        try:
            if _is_job_folder(job_dir, job_rel, job_id, problems):
                _walk_job_files(job_dir, job_rel, file_type, job_id, files, problems)
        except OSError as exc:
            return Problem("unreadable", _os_reason(exc), job_id, job_rel)
    files.sort(key=lambda f: (f.file_type, f.file_path))
    return JobSource(
        job_id=job_id,
        json_path=rel,
        json_size=st.st_size,
        json_mtime_ns=st.st_mtime_ns,
        json_ino=st.st_ino,
        files=tuple(files),
        problems=tuple(problems),
    )


def _is_job_folder(path: str, rel: str, job_id: str, problems: list[Problem]) -> bool:
    """Whether uploads/<id> or outputs/<id> is a folder to read (missing, a link or a file: no)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        problems.append(Problem("symlink_skipped", "symbolic link not followed", job_id, rel))
    elif not stat.S_ISDIR(mode):
        problems.append(Problem("stray_file", "a file where the job's folder belongs", job_id, rel))
    return stat.S_ISDIR(mode)


def _walk_job_files(
    folder: str,
    rel: str,
    file_type: str,
    job_id: str,
    files: list[FileStat],
    problems: list[Problem],
) -> None:
    with os.scandir(folder) as it:
        entries = list(it)
    for entry in entries:
        name = entry.name
        if is_ignored_name(name):
            continue
        entry_rel = f"{rel}/{name}"
        if entry.is_symlink():
            problems.append(
                Problem("symlink_skipped", "symbolic link not followed", job_id, entry_rel)
            )
        elif entry.is_dir(follow_symlinks=False):
            _walk_job_files(entry.path, entry_rel, file_type, job_id, files, problems)
        elif entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            files.append(FileStat(file_type, name, entry_rel, st.st_size, st.st_mtime_ns))


def _scan_orphans(data_dir: Path, folder: str) -> Iterator[Problem]:
    code = "orphan_upload_dir" if folder == UPLOADS else "orphan_output_dir"
    jobs_dir = os.path.join(data_dir, JOBS)
    for entry in _entries(data_dir / folder, ordered=False):
        if is_job_id(entry.name) and _is_job_json(f"{jobs_dir}/{entry.name}.json"):
            continue  # the job's own scan reports anything odd about its folder
        rel = f"{folder}/{entry.name}"
        if entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=rel)
        elif not entry.is_dir(follow_symlinks=False):
            yield Problem("stray_file", "not inside a job folder", path=rel)
        elif not is_job_id(entry.name):
            yield Problem("invalid_job_dir", "job folder whose name is not a UUID", path=rel)
        else:
            yield Problem(code, "no job JSON for this folder", entry.name.lower(), rel)


def _is_real_dir(path: Path) -> bool:
    """A folder, not a symbolic link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_job_json(path: str | Path) -> bool:
    """Whether the scan takes this path as a job: a regular file, not a symbolic link."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _entries(folder: Path, *, ordered: bool = True) -> Iterator[os.DirEntry[str]]:
    """A folder's entries, minus hidden and temporary names.

    The three big folders are streamed in directory order (``ordered=False``), so that
    memory does not grow with the number of jobs; small folders are sorted by name.
    """
    try:
        with os.scandir(folder) as it:
            entries = (e for e in it if not is_ignored_name(e.name))
            if ordered:
                yield from sorted(entries, key=lambda e: e.name)
            else:
                yield from entries
    except PermissionError as exc:
        raise DataDirError(f"{folder}: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def count_job_files(data_dir: Path) -> int:
    """How many job JSONs a scan will meet: a cheap listing, for a progress bar's total."""
    try:
        with os.scandir(data_dir / JOBS) as it:
            return sum(
                1 for e in it if e.name.lower().endswith(".json") and not is_ignored_name(e.name)
            )
    except OSError:
        return 0
