"""The folders that a few files of a legacy tree are written into, each opened once, from
DATA_DIR down, without following a symbolic link (see core/tree_writer.py).

Reopening every folder from DATA_DIR for every file cost more than the file itself: a
job's files share their folders, and all jobs share jobs/, uploads/ and outputs/. So the
writer opens them for a handful of files at a time, and keeps each descriptor until that
handful is written. A folder that cannot be opened is not kept: the next file under it
tries again, and is refused or fails as the first one was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from comsa_migrate.core.layout import FOLDER_FLAGS, NOT_FOLLOWED

__all__ = ["FolderRefused", "OpenFolders"]


class FolderRefused(Exception):
    """A folder on the way is a symbolic link, or not a folder: nothing is written through
    it (the message names it)."""


class OpenFolders:
    """Descriptors of DATA_DIR and of the folders below it opened so far; close() them."""

    def __init__(self, data_dir: Path, *, create: bool) -> None:
        self._data_dir = data_dir
        self._create = create
        self._fds: dict[tuple[str, ...], int] = {}

    def open(self, folders: tuple[str, ...]) -> int | None:
        """The descriptor of DATA_DIR's descendant ``folders`` (kept open until close()),
        each opened without following a link; made when missing and ``create``, else None.
        Raises FolderRefused for a link or a file on the way, OSError for the rest."""
        fd = self._fds.get(folders)
        if fd is not None:
            return fd
        known = len(folders)
        while known > 0 and folders[:known] not in self._fds:
            known -= 1
        if known == 0 and () not in self._fds:
            try:
                self._fds[()] = os.open(self._data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if self._create:
                    raise
                return None  # a dry run into a DATA_DIR not made yet
        fd = self._fds[folders[:known]]
        for depth in range(known + 1, len(folders) + 1):
            child = self._child(fd, folders[:depth])
            if child is None:
                return None
            self._fds[folders[:depth]] = fd = child
        return fd

    def close(self) -> None:
        fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    def _child(self, parent: int, folders: tuple[str, ...]) -> int | None:
        name = folders[-1]
        try:
            return os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not self._create:
                return None
            # another thread may have made it: then it is opened as it is
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
            try:
                return os.open(name, FOLDER_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in NOT_FOLLOWED:
                    raise FolderRefused(_not_a_folder(folders)) from None
                raise
        except OSError as exc:
            if exc.errno in NOT_FOLLOWED:
                raise FolderRefused(_not_a_folder(folders)) from None
            raise


def _not_a_folder(folders: tuple[str, ...]) -> str:
    return (
        f"{'/'.join(folders)} is a symbolic link or not a folder; not followed, nothing "
        "written through it"
    )
