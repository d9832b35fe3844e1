"""The scan of the legacy tree: which jobs exist, with their JSON and files, and every oddity."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator
from functools import partial
from operator import itemgetter
from pathlib import Path

from comsa_migrate.core.job_folders import Listing, walk_job_folder
from comsa_migrate.core.layout import (
    JOBS,
    OUTPUTS,
    UPLOADS,
    FileStat,
    JobSource,
    ScanItem,
    data_dir_meant,
    has_data_folders,
    is_ignored_name,
    is_job_id,
    is_job_json,
    is_real_dir,
    job_id_of_json,
    json_stem,
    kind_of_file,
    link_skipped,
    os_reason,
    unlistable,
)
from comsa_migrate.core.scan_workers import can_fork, scan_in_workers, usable_cores
from comsa_migrate.errors import DataDirError
from comsa_migrate.problems import Problem

#: the order of a job's files: by type, then path (FileStat's fields 0 and 2)
_TYPE_AND_PATH = itemgetter(0, 2)

__all__ = ["check_data_dir", "count_job_files", "job_source", "scan", "scan_job"]


def scan(data_dir: Path, *, workers: int = 1) -> Iterator[ScanItem]:
    """Walk DATA_DIR once: yield a JobSource per job JSON, and a Problem for everything else.

    Raises DataDirError before yielding anything when DATA_DIR cannot be scanned; from
    then on, whatever goes wrong is a problem and the scan goes on. What it holds while
    it lasts: the names in uploads/ and outputs/ (see Listing), and the job JSONs named
    other than ``<id>.json``. With ``workers`` above one, the job JSONs are scanned in
    that many processes, no more than the machine's cores (see scan_workers), and jobs/
    is listed whole first; what is yielded, and in which order, does not depend on
    ``workers``.
    """
    check_data_dir(data_dir)
    yield from _scan_top_level(data_dir)
    listings = _listings(data_dir, listed=True)
    for listing in listings:
        if listing.problem is not None:
            yield listing.problem
    jobs_dir = data_dir / JOBS
    others = _JsonNames(jobs_dir if is_real_dir(jobs_dir) else None)
    if others.jobs_dir is not None:
        yield from _scan_jobs(jobs_dir, listings, others, workers)
    for listing in listings:
        yield from _scan_orphans(listing, others)


def check_data_dir(data_dir: Path) -> None:
    """Raise DataDirError unless DATA_DIR and its jobs/, uploads/ and outputs/ can be read.

    Each of the three that exists must be a folder this process can list and enter:
    a scan that met an unreadable uploads/ only after writing most jobs would have
    done half a run. A folder given instead of DATA_DIR that leads to one (backend/,
    jobs/) names it. Backfill, report and sync all check here first.
    """
    if not data_dir.exists():
        raise DataDirError(f"{data_dir}: no such folder")
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a folder")
    _check_listable(data_dir)
    if not has_data_folders(data_dir):
        meant = data_dir_meant(data_dir)
        if meant is not None:
            what, folder = meant
            raise DataDirError(
                f"{data_dir}: not a legacy data folder, but it looks like {what};"
                f" did you mean {folder}?"
            )
        raise DataDirError(
            f"{data_dir}: not a legacy data folder (it has no jobs/, uploads/ or outputs/)"
        )
    for name in (JOBS, UPLOADS, OUTPUTS):
        if is_real_dir(data_dir / name):
            _check_listable(data_dir / name)


def _check_listable(folder: Path) -> None:
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataDirError(f"{folder}: permission denied")
    try:
        with os.scandir(folder) as it:
            next(it, None)
    except OSError as exc:
        raise DataDirError(f"{folder}: {os_reason(exc)}") from None


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
        return [link_skipped(JOBS)]
    name = f"{job_id}.json"
    if any_case:
        try:
            names = _names_of_job(jobs_dir, job_id)
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [Problem("unreadable", os_reason(exc), job_id, JOBS)]
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
        return [Problem("unreadable", os_reason(exc), job_id, rel)]
    if stat.S_ISLNK(st.st_mode):
        return [link_skipped(rel)]
    return [_job_of_json(_listings(data_dir, listed=False), rel, st)]


def _scan_top_level(data_dir: Path) -> Iterator[Problem]:
    for entry in _entries(data_dir, "."):
        if isinstance(entry, Problem):
            yield entry
        elif entry.name in (JOBS, UPLOADS, OUTPUTS) and entry.is_dir(follow_symlinks=False):
            continue
        elif entry.is_symlink():
            yield link_skipped(entry.name)
        else:
            yield Problem("stray_file", "not part of the job store", path=entry.name)


def _scan_jobs(
    jobs_dir: Path, listings: list[Listing], others: _JsonNames, workers: int
) -> Iterator[ScanItem]:
    """Every name in jobs/, in directory order: a job JSON's JobSource (or the problem
    stopping it), and the problem of any other name.

    Each job JSON claims its folders once it is scanned: what is left in the listings
    are the orphans. With ``workers``, jobs/ is listed whole before the first is scanned.
    """
    scan_one = partial(_job_of_name, os.fspath(jobs_dir), listings)
    pairs: Iterable[tuple[str | Problem, ScanItem]]
    workers = min(workers, usable_cores())
    if workers > 1 and can_fork():
        tasks = list(_job_tasks(jobs_dir, others))
        pairs = zip(tasks, scan_in_workers(tasks, scan_one, workers), strict=True)
    else:
        pairs = (
            (task, task if isinstance(task, Problem) else scan_one(task))
            for task in _job_tasks(jobs_dir, others)
        )
    for task, item in pairs:
        if not isinstance(task, Problem):
            stem = json_stem(task)
            for listing in listings:
                listing.claim(stem)
        yield item


def _job_tasks(jobs_dir: Path, others: _JsonNames) -> Iterator[str | Problem]:
    """jobs/, streamed in directory order: the name of each job JSON to scan, and a
    Problem for any other name (a link, a JSON named by no UUID, one of several names of
    a job…)."""
    reported: set[str] = set()  # job ids whose duplicate JSONs were reported
    try:
        with os.scandir(jobs_dir) as it:
            for entry in it:
                name = entry.name
                if is_ignored_name(name):
                    continue
                job_id = job_id_of_json(name)
                if job_id is not None and (names := others.of_job(job_id, name)) is not None:
                    if job_id not in reported:  # all of them at once: the job is skipped once
                        reported.add(job_id)
                        yield from _duplicates(job_id, names)
                elif entry.is_symlink():
                    yield link_skipped(f"{JOBS}/{name}")
                elif job_id is None:
                    yield _not_a_job(entry, f"{JOBS}/{name}")
                else:
                    yield name
    except OSError as exc:
        yield unlistable(JOBS, exc)


def _job_of_name(jobs_root: str, listings: list[Listing], name: str) -> ScanItem:
    """The JobSource of the job JSON ``name`` in jobs/, or the problem that stops it."""
    rel = f"{JOBS}/{name}"
    try:
        st = os.lstat(f"{jobs_root}/{name}")
    except OSError as exc:
        return Problem("unreadable", os_reason(exc), job_id_of_json(name), rel)
    return _job_of_json(listings, rel, st)


def _not_a_job(entry: os.DirEntry[str], rel: str) -> Problem:
    """A name in jobs/ that is no job's: a JSON not named by a UUID, or anything else."""
    stem, dot, suffix = entry.name.rpartition(".")
    if entry.is_file(follow_symlinks=False) and dot and suffix.lower() == "json":
        return Problem("invalid_job_dir", "job JSON whose name is not a UUID", path=rel)
    return Problem("stray_file", "not a job JSON", path=rel)


def _job_of_json(listings: list[Listing], rel: str, st: os.stat_result) -> ScanItem:
    """The JobSource of the one JSON of a job, or not_a_file for anything but a file."""
    stem = json_stem(rel.rpartition("/")[2])
    if not stat.S_ISREG(st.st_mode):
        what = kind_of_file(st.st_mode)
        return Problem("not_a_file", f"{what} where the job JSON belongs", stem.lower(), rel)
    return _job_source(listings, stem, rel, st)


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
                    job_id = job_id_of_json(entry.name)
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
        return [name for name in names if is_job_json(f"{self._root}/{name}")]

    def has_json_named(self, stem: str) -> bool:
        """Whether ``<stem>.<json in any case>`` is a JSON the scan takes: its folder's."""
        job_id = stem.lower()
        if self.jobs_dir is None:
            return False
        if job_id not in self.names:  # the common case: one lstat, as for a plain name
            return stem == job_id and is_job_json(f"{self._root}/{job_id}.json")
        return any(json_stem(n) == stem for n in self.jsons_of(job_id))


def _names_of_job(jobs_dir: Path, job_id: str) -> list[str]:
    """Every name in jobs/ that maps to ``job_id``: one listing of the folder."""
    with os.scandir(jobs_dir) as it:
        return [e.name for e in it if job_id_of_json(e.name) == job_id]


def _listings(data_dir: Path, *, listed: bool) -> list[Listing]:
    """uploads/ and outputs/ where they are real folders (not links); ``listed``: list them."""
    root = os.fspath(data_dir)
    return [
        Listing(root, folder, listed=listed)
        for folder in (UPLOADS, OUTPUTS)
        if is_real_dir(data_dir / folder)
    ]


def _job_source(listings: list[Listing], stem: str, rel: str, st: os.stat_result) -> ScanItem:
    job_id = stem.lower()
    files: list[FileStat] = []
    problems: list[Problem] = []
    for listing in listings:
        if not listing.holds(stem):
            continue
        try:
            walk_job_folder(listing, stem, job_id, files, problems)
        except OSError as exc:
            return Problem("unreadable", os_reason(exc), job_id, f"{listing.folder}/{stem}")
    files.sort(key=_TYPE_AND_PATH)
    return JobSource.seen(job_id, rel, st, tuple(files), tuple(problems), time.time_ns())


def _scan_orphans(listing: Listing, others: _JsonNames) -> Iterator[Problem]:
    """What is in uploads/ or outputs/ that no job claimed, in listing order."""
    folder = listing.folder
    code = "orphan_upload_dir" if folder == UPLOADS else "orphan_output_dir"
    for name in listing.unclaimed():
        rel = f"{folder}/{name}"
        if is_job_id(name) and others.has_json_named(name):
            continue  # the job's own scan reports anything odd about its folder
        mode = listing.mode(name)
        if mode is None:
            continue  # gone since the listing
        if stat.S_ISLNK(mode):
            yield link_skipped(rel)
        elif not stat.S_ISDIR(mode):
            yield Problem("stray_file", "not inside a job folder", path=rel)
        elif not is_job_id(name):
            yield Problem("invalid_job_dir", "job folder whose name is not a UUID", path=rel)
        elif jsons := others.jsons_of(name.lower()):
            named = ", ".join(f"{JOBS}/{n}" for n in sorted(jsons))
            yield Problem(
                "job_dir_case_mismatch",
                f"the job's JSON is {named}: a folder named in another case is not its "
                "folder and is not mirrored",
                name.lower(),
                rel,
            )
        else:
            yield Problem(code, "no job JSON for this folder", name.lower(), rel)


def _entries(folder: Path, rel: str) -> Iterator[os.DirEntry[str] | Problem]:
    """A small folder's entries by name, minus hidden and temporary names; a folder that
    cannot be listed (changed since check_data_dir) is an ``unreadable`` problem at ``rel``."""
    try:
        with os.scandir(folder) as it:
            yield from sorted((e for e in it if not is_ignored_name(e.name)), key=lambda e: e.name)
    except OSError as exc:
        yield unlistable(rel, exc)


def count_job_files(data_dir: Path) -> int:
    """How many job JSONs a scan will meet: a cheap listing, for a progress bar's total."""
    try:
        with os.scandir(data_dir / JOBS) as it:
            return sum(
                1 for e in it if e.name.lower().endswith(".json") and not is_ignored_name(e.name)
            )
    except OSError:
        return 0
