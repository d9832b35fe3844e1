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

from comsa_migrate.errors import DataDirError
from comsa_migrate.problems import Problem

__all__ = [
    "FileStat",
    "check_data_dir",
    "count_job_files",
    "JobSource",
    "ScanItem",
    "is_ignored_name",
    "job_source",
    "is_job_id",
    "read_job_json",
    "scan",
    "scan_job",
    "utc_from_ns",
]

#: bump when normalisation changes, so that every fingerprint changes and jobs are re-read
NORMALISER_VERSION = "3"

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

    Raises DataDirError before yielding anything when DATA_DIR cannot be scanned; from
    then on, whatever goes wrong is a problem and the scan goes on. Memory stays flat:
    nothing is collected across jobs but the job JSONs named other than ``<id>.json``.
    """
    check_data_dir(data_dir)
    yield from _scan_top_level(data_dir)
    jobs_dir = data_dir / JOBS
    others = _JsonNames(jobs_dir if _is_real_dir(jobs_dir) else None)
    if others.jobs_dir is not None:
        yield from _scan_jobs(data_dir, others)
    for folder in (UPLOADS, OUTPUTS):
        if _is_real_dir(data_dir / folder):
            yield from _scan_orphans(data_dir, folder, others)


def check_data_dir(data_dir: Path) -> None:
    """Raise DataDirError unless DATA_DIR and its jobs/, uploads/ and outputs/ can be read.

    Each of the three that exists must be a folder this process can list and enter:
    a scan that met an unreadable uploads/ only after writing most jobs would have
    done half a run.
    """
    if not data_dir.exists():
        raise DataDirError(f"{data_dir}: no such folder")
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a folder")
    _check_listable(data_dir)
    if not any((data_dir / name).is_dir() for name in (JOBS, UPLOADS, OUTPUTS)):
        raise DataDirError(
            f"{data_dir}: not a legacy data folder (it has no jobs/, uploads/ or outputs/)"
        )
    for name in (JOBS, UPLOADS, OUTPUTS):
        if _is_real_dir(data_dir / name):
            _check_listable(data_dir / name)


def _check_listable(folder: Path) -> None:
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataDirError(f"{folder}: permission denied")
    try:
        with os.scandir(folder) as it:
            next(it, None)
    except OSError as exc:
        raise DataDirError(f"{folder}: {_os_reason(exc)}") from None


def job_source(data_dir: Path, job_id: str) -> ScanItem | None:
    """The current JobSource of ``jobs/<id>.json`` (or the problem stopping it); None if gone."""
    items = scan_job(data_dir, job_id)
    return items[0] if items else None


def scan_job(data_dir: Path, job_id: str, *, any_case: bool = False) -> list[ScanItem]:
    """What a scan gives for one job now: its JobSource, or the problems stopping it.

    Empty when no JSON of the job is on disk. Only ``jobs/<id>.json`` is looked at,
    unless ``any_case``: then jobs/ is listed for every name that maps to the job
    (``<ID>.json``, ``<id>.JSON``…), as the scan does.
    """
    jobs_dir = data_dir / JOBS
    if os.path.islink(jobs_dir):
        return [Problem("symlink_skipped", "symbolic link not followed", path=JOBS)]
    name = f"{job_id}.json"
    if any_case:
        try:
            names = _names_of_job(jobs_dir, job_id)
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [Problem("unreadable", _os_reason(exc), job_id, JOBS)]
        if len(names) > 1:
            return list(_duplicates(job_id, names))
        if not names:
            return []
        name = names[0]
    rel = f"{JOBS}/{name}"
    try:
        st = os.lstat(jobs_dir / name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [Problem("unreadable", _os_reason(exc), job_id, rel)]
    if stat.S_ISLNK(st.st_mode):
        return [Problem("symlink_skipped", "symbolic link not followed", path=rel)]
    return [_job_of_json(data_dir, _file_folders(data_dir), rel, st)]


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


def _scan_top_level(data_dir: Path) -> Iterator[Problem]:
    for entry in _entries(data_dir, "."):
        if isinstance(entry, Problem):
            yield entry
        elif entry.name in (JOBS, UPLOADS, OUTPUTS) and entry.is_dir(follow_symlinks=False):
            continue
        elif entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=entry.name)
        else:
            yield Problem("stray_file", "not part of the job store", path=entry.name)


def _scan_jobs(data_dir: Path, others: _JsonNames) -> Iterator[ScanItem]:
    folders = _file_folders(data_dir)
    reported: set[str] = set()  # job ids whose duplicate JSONs were reported
    for entry in _entries(data_dir / JOBS, JOBS, ordered=False):
        if isinstance(entry, Problem):
            yield entry
            continue
        rel = f"{JOBS}/{entry.name}"
        job_id = _job_id_of_json(entry.name)
        if job_id is not None and (names := others.of_job(job_id, entry.name)) is not None:
            if job_id not in reported:  # all of them at once: the job is skipped once
                reported.add(job_id)
                yield from _duplicates(job_id, names)
            continue
        if entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=rel)
            continue
        if job_id is None:
            stem, dot, suffix = entry.name.rpartition(".")
            if entry.is_file(follow_symlinks=False) and dot and suffix.lower() == "json":
                yield Problem("invalid_job_dir", "job JSON whose name is not a UUID", path=rel)
            else:
                yield Problem("stray_file", "not a job JSON", path=rel)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            yield Problem("unreadable", _os_reason(exc), job_id, rel)
            continue
        yield _job_of_json(data_dir, folders, rel, st)


def _job_of_json(data_dir: Path, folders: dict[str, str], rel: str, st: os.stat_result) -> ScanItem:
    """The JobSource of the one JSON of a job, or not_a_file for anything but a file."""
    stem = rel[len(JOBS) + 1 :].rpartition(".")[0]
    if not stat.S_ISREG(st.st_mode):
        what = _kind_of_file(st.st_mode)
        return Problem("not_a_file", f"{what} where the job JSON belongs", stem.lower(), rel)
    return _job_source(data_dir, folders, stem, rel, st)


def _duplicates(job_id: str, names: list[str]) -> Iterator[Problem]:
    """One error per JSON of a job named more than once; none of them is read."""
    paths = [f"{JOBS}/{name}" for name in sorted(names)]
    for path in paths:
        others = ", ".join(p for p in paths if p != path)
        yield Problem(
            "duplicate_job_id",
            f"{others} names the same job; none of them is written until one is left",
            job_id,
            path,
        )


def _job_id_of_json(name: str) -> str | None:
    """The job id a name in jobs/ stands for (``<uuid>.json`` in any case), or None."""
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix.lower() == "json" and is_job_id(stem):
        return stem.lower()
    return None


class _JsonNames:
    """The names in jobs/ that map to a job id but are not ``<id>.json``, by job id.

    They are rare, so this stays small; with them and one lstat of ``<id>.json`` every
    name a job has in jobs/ is known without listing the folder again.
    """

    def __init__(self, jobs_dir: Path | None) -> None:
        self.jobs_dir = jobs_dir
        self._root = "" if jobs_dir is None else os.fspath(jobs_dir)  # str: paths are hot here
        self.names: dict[str, list[str]] = {}
        if jobs_dir is None:
            return
        try:
            with os.scandir(jobs_dir) as it:
                for entry in it:
                    if entry.name.islower():
                        continue  # "<id>.json" itself, or no job's name at all
                    job_id = _job_id_of_json(entry.name)
                    if job_id is not None:
                        self.names.setdefault(job_id, []).append(entry.name)
        except OSError:
            pass  # the scan of jobs/ reports it

    def of_job(self, job_id: str, name: str) -> list[str] | None:
        """All the names of the job ``name`` maps to, when it has more than one."""
        if name == f"{job_id}.json" and job_id not in self.names:
            return None  # the only name of its job: the common case, at no cost
        known = [*self.names.get(job_id, ()), f"{job_id}.json"]
        names = [n for n in known if n == name or os.path.lexists(f"{self._root}/{n}")]
        if name not in names:
            names.append(name)  # created since the listing
        return names if len(names) > 1 else None

    def jsons_of(self, job_id: str) -> list[str]:
        """The names of this job in jobs/ that the scan takes as its JSON (not links)."""
        if self.jobs_dir is None:
            return []
        names = [*self.names.get(job_id, ()), f"{job_id}.json"]
        return [name for name in names if _is_job_json(f"{self._root}/{name}")]

    def has_json_named(self, stem: str) -> bool:
        """Whether ``<stem>.<json in any case>`` is a JSON the scan takes: its folder's."""
        job_id = stem.lower()
        if self.jobs_dir is None:
            return False
        if job_id not in self.names:  # the common case: one lstat, as for a plain name
            return stem == job_id and _is_job_json(f"{self._root}/{job_id}.json")
        return any(n.rpartition(".")[0] == stem for n in self.jsons_of(job_id))


def _names_of_job(jobs_dir: Path, job_id: str) -> list[str]:
    """Every name in jobs/ that maps to ``job_id``: one listing of the folder."""
    with os.scandir(jobs_dir) as it:
        return [e.name for e in it if _job_id_of_json(e.name) == job_id]


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
        if not _is_utf8(name):
            what = "folder" if entry.is_dir(follow_symlinks=False) else "file"
            problems.append(
                Problem(
                    "invalid_file_name",
                    f"a {what} name that is not UTF-8 cannot be stored as text; skipped",
                    job_id,
                    entry_rel,
                )
            )
        elif entry.is_symlink():
            problems.append(
                Problem("symlink_skipped", "symbolic link not followed", job_id, entry_rel)
            )
        elif entry.is_dir(follow_symlinks=False):
            _walk_job_files(entry.path, entry_rel, file_type, job_id, files, problems)
        else:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing: not on disk, not mirrored
            if stat.S_ISREG(st.st_mode):
                files.append(FileStat(file_type, name, entry_rel, st.st_size, st.st_mtime_ns))
            else:
                what = _kind_of_file(st.st_mode)
                problems.append(
                    Problem(
                        "special_file_skipped", f"{what}, not a file; skipped", job_id, entry_rel
                    )
                )


def _scan_orphans(data_dir: Path, folder: str, others: _JsonNames) -> Iterator[Problem]:
    code = "orphan_upload_dir" if folder == UPLOADS else "orphan_output_dir"
    for entry in _entries(data_dir / folder, folder, ordered=False):
        if isinstance(entry, Problem):
            yield entry
            continue
        rel = f"{folder}/{entry.name}"
        if is_job_id(entry.name) and others.has_json_named(entry.name):
            continue  # the job's own scan reports anything odd about its folder
        if entry.is_symlink():
            yield Problem("symlink_skipped", "symbolic link not followed", path=rel)
        elif not entry.is_dir(follow_symlinks=False):
            yield Problem("stray_file", "not inside a job folder", path=rel)
        elif not is_job_id(entry.name):
            yield Problem("invalid_job_dir", "job folder whose name is not a UUID", path=rel)
        elif jsons := others.jsons_of(entry.name.lower()):
            named = ", ".join(f"{JOBS}/{n}" for n in sorted(jsons))
            yield Problem(
                "job_dir_case_mismatch",
                f"the job's JSON is {named}: a folder named in another case is not its "
                "folder and is not mirrored",
                entry.name.lower(),
                rel,
            )
        else:
            yield Problem(code, "no job JSON for this folder", entry.name.lower(), rel)


def _is_real_dir(path: Path) -> bool:
    """A folder, not a symbolic link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_job_json(path: str | Path) -> bool:
    """Whether the scan takes this path as a job: anything but a symbolic link.

    A folder or a FIFO there is the job's problem (not_a_file), which covers its folders.
    """
    try:
        return not stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _entries(
    folder: Path, rel: str, *, ordered: bool = True
) -> Iterator[os.DirEntry[str] | Problem]:
    """A folder's entries, minus hidden and temporary names; a folder that cannot be
    listed (changed since check_data_dir) is an ``unreadable`` problem at ``rel``.

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
    except OSError as exc:
        yield Problem("unreadable", f"the folder cannot be listed: {_os_reason(exc)}", path=rel)


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os.fsdecode made them surrogates)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind_of_file(mode: int) -> str:
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
