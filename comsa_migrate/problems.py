"""Every problem code comsa-migrate reports, with its severity, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["CODES", "Problem", "Severity", "printable"]


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


ERR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

#: code -> (severity, one-line meaning). docs/mapping.md's table is generated from this.
CODES: dict[str, tuple[Severity, str]] = {
    # errors: the job is not written, the run goes on
    "invalid_json": (ERR, "the job file is not readable JSON (empty, truncated, bad UTF-8, BOM)"),
    "not_an_object": (ERR, "the job file holds JSON that is not an object"),
    "invalid_job_id": (ERR, "the `id` field is not a UUID"),
    "id_mismatch": (ERR, "the `id` field differs from the file name"),
    "missing_field": (ERR, "`type` or `status` is missing"),
    "invalid_status": (ERR, "`status` is not pending, running, completed or failed"),
    "invalid_timestamp": (ERR, "a timestamp (or a log line's prefix) cannot be parsed"),
    "invalid_field": (ERR, "a field has the wrong type or is longer than its column"),
    "file_too_large": (ERR, "the job file is larger than --max-json-bytes"),
    "unreadable": (ERR, "the job file or folder cannot be read (permissions, I/O)"),
    "not_a_file": (ERR, "a folder, FIFO, socket or device where a job JSON belongs; never opened"),
    "duplicate_job_id": (ERR, "job JSONs whose names differ only in case; none of them is written"),
    "conflict": (ERR, "the database copy was changed by something else; --force overwrites"),
    "db_error": (ERR, "the database refused the job's rows; the job was rolled back"),
    "internal_error": (ERR, "an unexpected error in comsa-migrate (a bug); the job was skipped"),
    "schema_missing": (ERR, "some of the dashboard's tables are missing (report only)"),
    # errors of restore and export: the file is not written, the run goes on
    "stored_content_missing": (ERR, "the file store lacks the content stored_files names"),
    "stored_content_corrupt": (
        ERR,
        "the stored content's sha256 or size is not the one stored_files names",
    ),
    "file_differs": (ERR, "a different file is where a file belongs; left alone (--force)"),
    "unsafe_path": (
        ERR,
        "a stored path that leaves DATA_DIR, or passes a symbolic link; nothing written",
    ),
    "write_failed": (ERR, "the file could not be written (permissions, disk full, I/O)"),
    "store_read_failed": (
        ERR,
        "the file store failed to read the content; the file is not written",
    ),
    "job_json_failed": (ERR, "the job's legacy JSON could not be made from its row; not written"),
    "input_not_base64": (ERR, "a job_input_files content is not valid base64; not written"),
    "input_unreadable": (
        ERR,
        "a job_input_files content could not be read (refused, or deleted meanwhile)",
    ),
    # warnings: written (or left alone) but worth a look
    "missing_id": (WARN, "no `id` field; the file name was used"),
    "created_at_from_mtime": (WARN, "no `created_at`; the file's modification time was used"),
    "input_path_outside_root": (WARN, "`input_file` points outside DATA_DIR; stored as NULL"),
    "missing_input_file": (WARN, "`input_file` names a file that is not on disk"),
    "symlink_skipped": (WARN, "a symbolic link was not followed"),
    "orphan_upload_dir": (WARN, "an uploads/<id> folder has no job JSON"),
    "orphan_output_dir": (WARN, "an outputs/<id> folder has no job JSON"),
    "invalid_job_dir": (WARN, "a job folder or JSON whose name is not a UUID"),
    "job_dir_case_mismatch": (
        WARN,
        "a job folder whose name differs from its JSON's only in case; not mirrored",
    ),
    "invalid_file_name": (WARN, "a file or folder name that is not UTF-8; skipped"),
    "special_file_skipped": (WARN, "a FIFO, socket or device in a job's folder; skipped"),
    "input_too_large": (WARN, "an upload over --max-input-bytes; not copied to job_input_files"),
    "duplicate_input_name": (
        WARN,
        "two uploads of one job share a base name; job_input_files keeps the one nearest the top",
    ),
    # warnings of the report's database drift check
    "db_only": (WARN, "a job in the database with no JSON on disk"),
    "db_changed": (WARN, "the job's rows were changed since comsa-migrate wrote them"),
    "file_missing": (WARN, "a `job_files` row names a file that is not on disk"),
    "size_mismatch": (WARN, "a `job_files` size differs from the file on disk"),
    # the report's check of the file store (report --file-store): the two errors above, and
    "changed_since_stored": (
        WARN,
        "a stored file differs on disk (by size or time) from what was stored; the next run "
        "stores it",
    ),
    # warnings of export
    "output_not_stored": (WARN, "an output `job_files` names was never stored; not exported"),
    "original_not_stored": (
        WARN,
        "a migrated job's original JSON was never stored; rebuilt from its row, fields "
        "without a column lost",
    ),
    "original_unreadable": (
        WARN,
        "the stored job JSON cannot be read as a job; rebuilt from its row",
    ),
    # info: nothing is wrong, but it is not stored as such
    "algorithm_list_truncated": (INFO, "`algorithm` was a list; its first element was kept"),
    "unmapped_fields": (INFO, "fields with no column were not stored"),
    "metadata_only": (INFO, "a metadata sidecar without `type` and `status`; not a job"),
    "stray_file": (INFO, "a file that is not part of the job store"),
    "removed_since_stored": (INFO, "a stored file is gone from disk; its last content is kept"),
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong (or worth saying) about the legacy tree."""

    code: str
    message: str
    job_id: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown problem code {self.code!r}")
        # every output (text, JSON, Markdown, logs, the database) can carry the result; a
        # name is shown on one line, whatever control characters it holds
        for name in ("message", "job_id", "path"):
            value = getattr(self, name)
            if value is not None and not value.isprintable():
                object.__setattr__(self, name, printable(value, controls=name != "message"))

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]


#: what no output can carry as is: lone surrogates (a name's bytes that are not UTF-8,
#: as os.fsdecode leaves them, or a JSON "\udXXX" escape) and U+0000
_UNPRINTABLE = re.compile("[\x00\ud800-\udfff]")
#: the same, and the control characters that would break a line of text output
_UNPRINTABLE_OR_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def printable(text: str, *, controls: bool = False) -> str:
    """``text`` with each byte that was not UTF-8 as ``\\xNN``, other lone surrogates as
    ``\\uNNNN`` and U+0000 as ``\\x00``: valid UTF-8 that any output and PostgreSQL take.
    With ``controls``, the other control characters (a newline in a file name) as ``\\xNN``."""
    return (_UNPRINTABLE_OR_CONTROL if controls else _UNPRINTABLE).sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:  # os.fsdecode's "surrogateescape" of one byte
        return f"\\x{point - 0xDC00:02x}"
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"
