"""The legacy layout: its folders and names, and what stat tells of a job."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from comsa_migrate.problems import Problem

__all__ = [
    "FILE_FLAGS",
    "FILE_TYPE_OF_FOLDER",
    "FOLDER_FLAGS",
    "JOBS",
    "NORMALISER_VERSION",
    "NOT_FOLLOWED",
    "OUTPUTS",
    "UPLOADS",
    "FileStat",
    "JobSource",
    "ScanItem",
    "data_dir_meant",
    "has_data_folders",
    "is_ignored_name",
    "is_job_id",
    "is_job_json",
    "is_real_dir",
    "job_id_of_json",
    "json_stem",
    "is_utf8",
    "kind_of_file",
    "link_skipped",
    "os_reason",
    "unlistable",
    "utc_from_ns",
]

#: bump when normalisation changes, so that every fingerprint changes and jobs are re-read
NORMALISER_VERSION = "3"

#: modifications this close to a scan are not trusted to show in mtime (see JobSource)
RACY_WINDOW_NS = 2_000_000_000

JOBS, UPLOADS, OUTPUTS = "jobs", "uploads", "outputs"
#: a folder of the tree is opened, never followed through a link, never waited on
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: a file of the tree is opened the same way, and is a file
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: what opening with those flags says of a link (Linux; EMLINK on FreeBSD), or of a file
#: where a folder was
NOT_FOLLOWED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)
FILE_TYPE_OF_FOLDER = {UPLOADS: "input", OUTPUTS: "output"}
_UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(_UUID_PATTERN, re.I)
#: ``<id>.json`` as the dashboard names a job: all in lower case
_LOWER_CASE_JOB_JSON = re.compile(_UUID_PATTERN + r"\.json")
_TEMP_SUFFIXES = ("~", ".swp", ".tmp", ".part")
_EPOCH = datetime(1970, 1, 1)


def utc_from_ns(ns: int) -> datetime:
    """A stat time (ns since the epoch) as a naive UTC timestamp, exact to the microsecond."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def is_job_id(name: str) -> bool:
    return _UUID.fullmatch(name) is not None  # "$" would take a name ending in a newline


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor or temporary files are never part of the job store."""
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


def is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os.fsdecode made them surrogates)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def job_id_of_json(name: str) -> str | None:
    """The job id a name in jobs/ stands for (``<uuid>.json`` in any case), or None."""
    if _LOWER_CASE_JOB_JSON.fullmatch(name):  # the name nearly every job has
        return name[:-5]
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix.lower() == "json" and is_job_id(stem):
        return stem.lower()
    return None


def json_stem(name: str) -> str:
    """A job JSON's name without its ``.json`` (in any case): the name of its folders."""
    return name.rpartition(".")[0]


def is_real_dir(path: Path) -> bool:
    """A folder, not a symbolic link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def has_data_folders(path: Path) -> bool:
    """Whether ``path`` has a jobs/, uploads/ or outputs/ folder, as DATA_DIR does."""
    return any((path / name).is_dir() for name in (JOBS, UPLOADS, OUTPUTS))


def data_dir_meant(path: Path) -> tuple[str, Path] | None:
    """What ``path``, not a data folder, looks like, and the data folder it points to:
    the dashboard's backend folder (its data/), the dashboard's own folder (its
    backend/data/), or the jobs/, uploads/ or outputs/ of a data folder (their parent,
    when it has another of the three or ``path`` holds a job's name). None when it looks
    like none of these."""
    for what, meant in (
        ("the dashboard's backend folder", path / "data"),
        ("the dashboard's folder", path / "backend" / "data"),
    ):
        if has_data_folders(meant):
            return what, meant
    whole = Path(os.path.abspath(path))
    others = {JOBS, UPLOADS, OUTPUTS} - {whole.name}
    if len(others) == 3 or not (
        any((whole.parent / name).is_dir() for name in others) or _holds_a_job(whole)
    ):
        return None
    # the parent as it was given, unless it was given as nothing ("jobs", ".")
    parent = path.parent if path.name and str(path.parent) != "." else whole.parent
    return f"the {whole.name}/ folder of a data folder", parent


def _holds_a_job(folder: Path) -> bool:
    """Whether one of the first entries of ``folder`` is named after a job: <id>.json, <id>."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry, _ in zip(entries, range(100), strict=False)]
    except OSError:
        return False
    return any(is_job_id(json_stem(name) or name) for name in names)


def is_job_json(path: str | Path) -> bool:
    """Whether the scan takes this path as a job: anything but a symbolic link.

    A folder or a FIFO there is the job's problem (not_a_file), which covers its folders.
    """
    try:
        return not stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


class FileStat(NamedTuple):
    """One regular file under uploads/<id>/ or outputs/<id>/, as stat saw it.

    A named tuple rather than a frozen dataclass: a rerun makes one per file of the tree,
    and a tuple is made in less than half the time.
    """

    file_type: str  # "input" or "output"
    file_name: str
    file_path: str  # relative to DATA_DIR, "/"-separated
    size: int
    mtime_ns: int


class JobSource(NamedTuple):
    """A job JSON on disk and the files that belong to it: everything known before reading.

    The scan makes one with seen(), which also takes its fingerprint. A named tuple, as
    FileStat is: one is made per job, in the scan and again where a scan worker's answer
    is read (see scan_workers).
    """

    job_id: str  # lower-case UUID taken from the file name
    json_path: str  # relative to DATA_DIR
    json_size: int
    json_mtime_ns: int
    json_ino: int
    files: tuple[FileStat, ...]
    problems: tuple[Problem, ...]
    fingerprint: str  # a digest of what stat saw; "racy-" first: never to be trusted

    @classmethod
    def seen(
        cls,
        job_id: str,
        json_path: str,
        st: os.stat_result,
        files: tuple[FileStat, ...],
        problems: tuple[Problem, ...],
        scanned_ns: int,
    ) -> JobSource:
        """The job as a scan saw it at ``scanned_ns``, with its fingerprint.

        A file written again within the file system's timestamp granularity of being
        stat'ed can keep its mtime and size; like git's racy-clean check, a fingerprint
        taken that close to a modification is marked "racy-", so that it never matches,
        and the job is re-read (and found unchanged) on the next run.
        """
        size, mtime_ns, ino = st.st_size, st.st_mtime_ns, st.st_ino
        seen = [f"{NORMALISER_VERSION}|{json_path}|{size}|{mtime_ns}|{ino}"]
        newest = mtime_ns
        for file_type, _, path, file_size, file_mtime_ns in files:
            seen.append(f"{file_type}|{path}|{file_size}|{file_mtime_ns}")
            if file_mtime_ns > newest:
                newest = file_mtime_ns
        digest = hashlib.blake2b("\n".join(seen).encode(), digest_size=16).hexdigest()
        if scanned_ns - newest < RACY_WINDOW_NS:
            digest = "racy-" + digest
        return cls(job_id, json_path, size, mtime_ns, ino, files, problems, digest)

    @property
    def racy(self) -> bool:
        return self.fingerprint.startswith("racy-")


ScanItem = JobSource | Problem


def kind_of_file(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def link_skipped(rel: str, job_id: str | None = None) -> Problem:
    """The problem of a symbolic link at ``rel``: the scan never follows one."""
    return Problem("symlink_skipped", "symbolic link not followed", job_id, rel)


def unlistable(rel: str, exc: OSError) -> Problem:
    """The problem of a folder at ``rel`` that the scan could not list."""
    return Problem("unreadable", f"the folder cannot be listed: {os_reason(exc)}", path=rel)
