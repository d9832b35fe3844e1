"""A job's uploads as the dashboard's job_input_files holds them: base name and base64 bytes.

A small upload travels inside its job's JSON payload as base64. A large one does not: the
payload carries its name, the md5 of its base64 and its size, and its bytes are read
again when the job is written and sent apart, a chunk at a time, in the job's own
transaction (see schema/007_upload_staging.sql). So memory does not grow with an upload,
and the database compares both kinds by the same digest.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from comsa_migrate.core.layout import (
    FILE_FLAGS,
    FOLDER_FLAGS,
    NOT_FOLLOWED,
    JobSource,
    os_reason,
)
from comsa_migrate.problems import Problem

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_INLINE_INPUT_BYTES",
    "DEFAULT_MAX_INPUT_BYTES",
    "INLINE_BATCH_BYTES",
    "STORABLE_INPUT_BYTES",
    "InlineBudget",
    "InputEntry",
    "Inputs",
    "StreamedUpload",
    "input_contents",
]

log = logging.getLogger(__name__)

#: uploads larger than this are not copied into job_input_files (--max-input-bytes)
DEFAULT_MAX_INPUT_BYTES = 50 * 1024 * 1024
#: the largest upload whose base64 fits in one PostgreSQL value (1 GB, less a header)
STORABLE_INPUT_BYTES = (2**30 - 64) // 4 * 3
#: uploads up to this size travel inside their job's payload; larger ones are streamed
DEFAULT_INLINE_INPUT_BYTES = 1024 * 1024
#: the uploads inside one batch's payloads stay within this many bytes: past it, even a
#: small upload is streamed, so that a batch of many medium uploads is not held whole
INLINE_BATCH_BYTES = 8 * 1024 * 1024
#: bytes of a file per chunk sent: a multiple of 3, so that the chunks' base64, joined,
#: is the base64 of the whole file (1 MiB of base64 a chunk)
CHUNK_BYTES = 3 * 256 * 1024

#: an upload as its job's payload carries it: [name, base64], or, streamed,
#: [name, md5 of its base64, size in bytes]
InputEntry = tuple[str, str] | tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class StreamedUpload:
    """An upload sent apart from its job's payload, read again when the job is written."""

    job_id: str
    name: str  # base name, as job_input_files keys it
    data_dir: Path
    rel: str  # DATA_DIR-relative, where the scan saw it
    size: int  # bytes read when its digest was taken

    def chunks(self) -> Iterator[bytes]:
        """Its base64, CHUNK_BYTES of the file at a time.

        A file that cannot be read again ends the chunks early, and one that grew since
        its digest was taken is read one byte past that size, no further: either way the
        database finds that the digest differs and refuses the job, which the next run
        writes.
        """
        try:
            with _open(self.data_dir, self.rel) as fh:
                yield from _base64_chunks(fh, self.size + 1)
        except OSError as exc:
            log.warning("%s: %s: cannot read it again: %s", self.job_id, self.rel, _reason(exc))


@dataclass
class InlineBudget:
    """Which uploads travel inside one batch's payloads: each of at most ``per_upload``
    bytes, while they add up to no more than ``left``; the others are streamed."""

    per_upload: int = DEFAULT_INLINE_INPUT_BYTES
    left: int = INLINE_BATCH_BYTES

    def take(self, size: int) -> bool:
        """Whether an upload of ``size`` bytes travels inline (and is counted)."""
        if size > self.per_upload or size > self.left:
            return False
        self.left -= size
        return True


@dataclass(frozen=True, slots=True)
class Inputs:
    """A job's uploads for job_input_files: as its payload carries them, and those
    streamed apart (each also in ``entries``, by its digest)."""

    entries: list[InputEntry] = field(default_factory=list)
    streamed: tuple[StreamedUpload, ...] = ()


def input_contents(
    data_dir: Path,
    source: JobSource,
    max_bytes: int,
    budget: InlineBudget | None = None,
) -> tuple[Inputs, list[Problem]]:
    """The job's files under uploads/<id>/ for job_input_files, and problems.

    job_input_files keys uploads by base name, as the dashboard restores them into
    uploads/<id>/<name>: of two uploads with one base name in different subfolders, the
    one nearest the top is kept (then the first by path). A file over ``max_bytes`` is
    left out with a warning, and still keeps its name from the others. One that cannot
    be read stops the job (``unreadable``): no half-mirrored upload reaches the database.
    An upload that ``budget`` (by default one of its own) does not take is streamed.
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
        elif f.size > min(max_bytes, STORABLE_INPUT_BYTES):
            limit = (
                f"the limit of {max_bytes:,} (--max-input-bytes)"
                if f.size > max_bytes
                else f"{STORABLE_INPUT_BYTES:,}, whose base64 fills one PostgreSQL value (1 GB)"
            )
            message = f"{f.size:,} bytes is over {limit}; not stored in job_input_files"
            problems.append(Problem("input_too_large", message, source.job_id, f.file_path))
        else:
            chosen[f.file_name] = f.file_path
    entries: list[InputEntry] = []
    streamed: list[StreamedUpload] = []
    if budget is None:
        budget = InlineBudget()
    for name, rel in sorted(chosen.items()):
        try:
            with _open(data_dir, rel) as fh:
                size = os.fstat(fh.fileno()).st_size  # now, not at the scan
                if budget.take(size):
                    entries.append((name, base64.b64encode(fh.read()).decode("ascii")))
                    continue
                digest, size = _digest(fh)
            entries.append((name, digest, size))
            streamed.append(StreamedUpload(source.job_id, name, data_dir, rel, size))
        except OSError as exc:
            problems.append(Problem("unreadable", _reason(exc), source.job_id, rel))
    return Inputs(entries, tuple(streamed)), problems


def _digest(fh: BinaryIO) -> tuple[str, int]:
    """The md5 of the file's base64, as PostgreSQL's md5() of job_input_files.content_b64
    gives it, and the bytes read; a chunk at a time."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in _base64_chunks(fh, None):
        digest.update(chunk)
    return digest.hexdigest(), fh.tell()


def _base64_chunks(fh: BinaryIO, limit: int | None) -> Iterator[bytes]:
    """The base64 of the file's bytes (up to ``limit`` of them), CHUNK_BYTES at a time."""
    left = limit
    while left is None or left > 0:
        want = CHUNK_BYTES if left is None else min(CHUNK_BYTES, left)
        block = fh.read(want)  # a buffered read of a regular file: short only at its end
        if not block:
            return
        if left is not None:
            left -= len(block)
        yield base64.b64encode(block)
        if len(block) < want:
            return


def _open(data_dir: Path, rel: str) -> BinaryIO:
    """The regular file at ``rel`` under DATA_DIR, opened as the scan saw it there.

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
    fh = os.fdopen(file_fd, "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, "not a regular file since the scan")
    return fh


def _reason(exc: OSError) -> str:
    if exc.errno in NOT_FOLLOWED:
        return "a symbolic link or a file since the scan, where a folder or file was; not followed"
    return os_reason(exc)
