"""A job's uploads as the dashboard's job_input_files holds them: base name and base64 bytes."""

from __future__ import annotations

import base64
import errno
import os
import stat
from pathlib import Path

from comsa_migrate.core.layout import (
    FILE_FLAGS,
    FOLDER_FLAGS,
    NOT_FOLLOWED,
    JobSource,
    os_reason,
)
from comsa_migrate.problems import Problem

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "input_contents"]

#: uploads larger than this are not copied into job_input_files (--max-input-bytes)
DEFAULT_MAX_INPUT_BYTES = 50 * 1024 * 1024


def input_contents(
    data_dir: Path, source: JobSource, max_bytes: int
) -> tuple[list[tuple[str, str]], list[Problem]]:
    """[(file name, base64 content)] of the job's files under uploads/<id>/, and problems.

    job_input_files keys uploads by base name, as the dashboard restores them into
    uploads/<id>/<name>: of two uploads with one base name in different subfolders, the
    one nearest the top is kept (then the first by path). A file over ``max_bytes`` is
    left out with a warning, and still keeps its name from the others. One that cannot
    be read stops the job (``unreadable``): no half-mirrored upload reaches the database.
    """
    claimed: dict[str, str] = {}  # base name -> the upload that has it (nearest the top)
    chosen: dict[str, str] = {}  # base name -> path relative to DATA_DIR, to be stored
    problems: list[Problem] = []
    uploads = [f for f in source.files if f.file_type == "input"]
    for f in sorted(uploads, key=lambda f: (f.file_path.count("/"), f.file_path)):
        kept = claimed.setdefault(f.file_name, f.file_path)
        if kept != f.file_path:
            message = f"another upload of this job has this name; job_input_files keeps {kept}"
            problems.append(Problem("duplicate_input_name", message, source.job_id, f.file_path))
        elif f.size > max_bytes:
            problems.append(
                Problem(
                    "input_too_large",
                    f"{f.size:,} bytes is over the limit of {max_bytes:,} (--max-input-bytes); "
                    "not stored in job_input_files",
                    source.job_id,
                    f.file_path,
                )
            )
        else:
            chosen[f.file_name] = f.file_path
    contents: list[tuple[str, str]] = []
    for name, rel in sorted(chosen.items()):
        try:
            data = _read(data_dir, rel)
        except OSError as exc:
            problems.append(Problem("unreadable", _reason(exc), source.job_id, rel))
        else:
            contents.append((name, base64.b64encode(data).decode("ascii")))
    return contents, problems


def _read(data_dir: Path, rel: str) -> bytes:
    """The bytes of the regular file at ``rel`` under DATA_DIR, as the scan saw it there.

    Each folder on the way is opened without following a link, and the file is neither
    followed nor waited on (a FIFO): a folder or file replaced by a symbolic link since
    the scan is never read through, whatever it points to.
    """
    *folders, name = rel.split("/")
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # DATA_DIR as given
    try:
        for folder in folders:
            inner = os.open(folder, FOLDER_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(name, FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file since the scan")
        return fh.read()


def _reason(exc: OSError) -> str:
    if exc.errno in NOT_FOLLOWED:
        return "a symbolic link or a file since the scan, where a folder or file was; not followed"
    return os_reason(exc)
