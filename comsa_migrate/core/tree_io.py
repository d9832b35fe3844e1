"""The file operations under the tree writer (core/tree_writer.py): a content copied in and
hashed, a file hashed where it is, the final sync; and the two ways a file or a run fails."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "NotWritten",
    "RunFault",
    "copy_in",
    "sha256_at",
    "sync_file_system",
    "unlink_quietly",
]

log = logging.getLogger(__name__)

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_HASH_CHUNK = 1 << 20


class NotWritten(Exception):
    """The file is not written: ``code`` is its problem code. Raised by the writer, and by
    a TreeFile's ``content`` or a LaterFile's ``make`` for a fault of that file alone."""

    def __init__(
        self, code: str, message: str, job_id: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id  # of a file that could not be made, where the raiser knows it
        self.path = path


class RunFault(Exception):
    """Raised by a ``content`` or ``make`` when the run cannot go on (the database went
    away): write_files() stops, syncs what it wrote, and raises it."""


def copy_in(fd: int, content: Callable[[], Iterable[bytes]]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in content():
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    except KeyError:
        raise NotWritten(
            "stored_content_missing", "the file store does not hold its content; not written"
        ) from None
    return digest.hexdigest(), size


def sha256_at(parent: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    try:
        while chunk := os.read(fd, _HASH_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def sync_file_system(data_dir: Path) -> None:
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


def unlink_quietly(name: str, parent: int) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove the temporary file %s: %s", name, exc.strerror)
