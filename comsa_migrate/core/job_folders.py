"""A job's folders under uploads/ and outputs/: found from one listing, walked without links.

A scan lists uploads/ and outputs/ once. Each job then claims its folder by name: a job
without one costs no system call, and the names no job claimed are the orphans'
candidates, in listing order. Each folder is opened with O_NOFOLLOW and read through its
descriptor, so a folder replaced by a symbolic link since the listing is never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from stat import S_ISREG

from comsa_migrate.core.layout import (
    FILE_TYPE_OF_FOLDER,
    FOLDER_FLAGS,
    NOT_FOLLOWED,
    FileStat,
    is_ignored_name,
    is_utf8,
    kind_of_file,
    link_skipped,
    unlistable,
)
from comsa_migrate.problems import Problem

__all__ = ["Listing", "walk_job_folder"]

#: the longest path, in bytes and with its final NUL, that the OS opens by name
_PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096


class Listing:
    """uploads/ or outputs/ (``folder``), listed once: its names, in directory order.

    Holds one name per entry, about 150 bytes each, while the scan lasts. When the folder
    cannot be listed, ``problem`` says why and every job looks for its folder on disk.
    """

    def __init__(self, data_dir: str, folder: str, *, listed: bool = True) -> None:
        self.folder = folder
        self.file_type = FILE_TYPE_OF_FOLDER[folder]
        self.path = f"{data_dir}/{folder}"
        self.root_bytes = len(os.fsencode(data_dir)) + 1  # DATA_DIR and its "/", in bytes
        self.problem: Problem | None = None
        self.names: dict[str, None] | None = None  # None: not listed, every job looks
        if listed:
            try:
                names = os.listdir(self.path)
            except OSError as exc:
                self.problem = unlistable(folder, exc)
            else:
                self.names = dict.fromkeys(n for n in names if not is_ignored_name(n))

    def holds(self, stem: str) -> bool:
        """Whether the job named ``stem`` may have a folder here."""
        return self.names is None or stem in self.names

    def claim(self, stem: str) -> None:
        """The folder ``stem`` here, if any, is a job's: nobody's orphan."""
        if self.names is not None:
            self.names.pop(stem, None)

    def unclaimed(self) -> Iterator[str]:
        """The names no job claimed, in listing order."""
        yield from self.names or ()

    def mode(self, name: str) -> int | None:
        """What lstat says of the entry ``name`` now; None when it is gone."""
        return _mode(f"{self.path}/{name}")


def walk_job_folder(
    listing: Listing, stem: str, job_id: str, files: list[FileStat], problems: list[Problem]
) -> None:
    """Add the files of ``<folder>/<stem>`` to ``files``, and what is odd there to ``problems``.

    Nothing there is no folder. A link or a file where the folder belongs is a problem;
    a folder that cannot be read, or whose path is longer than the OS can open (the
    dashboard could not serve its files), raises OSError: the job is unreadable.
    """
    rel = f"{listing.folder}/{stem}"
    path = f"{listing.path}/{stem}"
    try:
        fd = os.open(path, FOLDER_FLAGS)
    except FileNotFoundError:
        return  # no folder, or gone since the listing
    except OSError as exc:
        if stat.S_ISLNK(_not_a_folder(exc, path)):
            problems.append(link_skipped(rel, job_id))
        else:
            message = "a file where the job's folder belongs"
            problems.append(Problem("stray_file", message, job_id, rel))
        return
    walk = _Walk(listing.file_type, job_id, files, problems, listing.root_bytes)
    try:
        walk.folder(fd, rel)
    finally:
        os.close(fd)


def _mode(name: str, dir_fd: int | None = None) -> int | None:
    """What lstat says of ``name`` now; None when it is gone or cannot be seen."""
    try:
        return os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return None


def _not_a_folder(exc: OSError, name: str, dir_fd: int | None = None) -> int:
    """The mode of what ``name`` is, when opening it as a folder failed (``exc``) because
    it is a link or a file; any other failure, or a folder after all, raises ``exc``."""
    mode = _mode(name, dir_fd) if exc.errno in NOT_FOLLOWED else None
    if mode is None or stat.S_ISDIR(mode):
        raise exc
    return mode


class _Walk:
    """The walk of one job's folder, through folder descriptors: what it finds, where."""

    __slots__ = ("file_type", "job_id", "files", "problems", "root_bytes")

    def __init__(
        self,
        file_type: str,
        job_id: str,
        files: list[FileStat],
        problems: list[Problem],
        root_bytes: int,
    ) -> None:
        self.file_type, self.job_id = file_type, job_id
        self.files, self.problems = files, problems
        self.root_bytes = root_bytes  # the length of DATA_DIR's path and its "/", in bytes

    def folder(self, fd: int, rel: str) -> None:
        """Every regular file under the open folder ``fd`` (at ``rel``), at any depth.

        Depth first, in listing order, and without recursion: folders nested as deep as a
        path may go are walked as any others, with a descriptor open per level of the
        folder being read. ``fd`` stays open; it is the caller's.
        """
        levels = [(fd, rel, _listed(fd))]  # the folders being read, the deepest last
        try:
            while levels:
                parent, parent_rel, entries = levels[-1]
                for entry in entries:
                    level = self.entry(parent, parent_rel, entry)
                    if level is not None:
                        levels.append(level)
                        break  # read it now; this folder's next entries come after
                else:  # every entry read: back to the folder above
                    levels.pop()
                    if levels:
                        os.close(parent)
        finally:
            for parent, _, _ in levels[1:]:
                os.close(parent)

    def entry(self, parent: int, rel: str, entry: os.DirEntry[str]) -> _Level | None:
        """Note one entry of the folder ``parent`` (at ``rel``): a file, or a problem; a
        subfolder comes back opened and listed, to be read next."""
        name = entry.name
        if is_ignored_name(name):
            return None
        entry_rel = f"{rel}/{name}"
        if not name.isascii() and not is_utf8(name):
            what = "folder" if entry.is_dir(follow_symlinks=False) else "file"
            message = f"a {what} name that is not UTF-8 cannot be stored as text; skipped"
            self.problems.append(Problem("invalid_file_name", message, self.job_id, entry_rel))
        elif entry.is_symlink():
            self.problems.append(link_skipped(entry_rel, self.job_id))
        elif entry.is_dir(follow_symlinks=False):
            return self.subfolder(parent, name, entry_rel)
        else:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                return None  # removed since the listing: not on disk, not mirrored
            if S_ISREG(st.st_mode):
                self.files.append(
                    FileStat(self.file_type, name, entry_rel, st.st_size, st.st_mtime_ns)
                )
            else:
                message = f"{kind_of_file(st.st_mode)}, not a file; skipped"
                self.problems.append(
                    Problem("special_file_skipped", message, self.job_id, entry_rel)
                )
        return None

    def subfolder(self, parent: int, name: str, rel: str) -> _Level | None:
        """The subfolder ``name`` of ``parent``, opened and listed; None when it is gone,
        or is no folder any more."""
        if self.root_bytes + len(rel.encode()) >= _PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), rel)
        try:
            fd = os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None  # removed since the listing
        except OSError as exc:
            # replaced since the listing: a link is not followed, a file is the next scan's
            if stat.S_ISLNK(_not_a_folder(exc, name, parent)):
                self.problems.append(link_skipped(rel, self.job_id))
            return None
        try:
            return fd, rel, _listed(fd)
        except BaseException:
            os.close(fd)
            raise


#: a folder being walked: its descriptor, its path, and its entries still to read
_Level = tuple[int, str, Iterator[os.DirEntry[str]]]


def _listed(fd: int) -> Iterator[os.DirEntry[str]]:
    """The entries of the open folder ``fd``, listed at once (the listing's own descriptor
    is closed before any of them is read)."""
    with os.scandir(fd) as it:
        return iter(list(it))
