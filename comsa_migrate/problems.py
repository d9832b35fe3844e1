"""Every problem code comsa-migrate reports, with its severity, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["CODES", "Problem", "Severity"]


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


ERR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

#: code -> (severity, one-line meaning). The README's table is generated from this.
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
    "conflict": (ERR, "the database copy was changed by something else; --force overwrites"),
    "db_error": (ERR, "the database refused the job's rows; the job was rolled back"),
    "schema_missing": (ERR, "some of the dashboard's tables are missing (report only)"),
    # warnings: written (or left alone) but worth a look
    "missing_id": (WARN, "no `id` field; the file name was used"),
    "created_at_from_mtime": (WARN, "no `created_at`; the file's modification time was used"),
    "input_path_outside_root": (WARN, "`input_file` points outside DATA_DIR; stored as NULL"),
    "missing_input_file": (WARN, "`input_file` names a file that is not on disk"),
    "symlink_skipped": (WARN, "a symbolic link was not followed"),
    "orphan_upload_dir": (WARN, "an uploads/<id> folder has no job JSON"),
    "orphan_output_dir": (WARN, "an outputs/<id> folder has no job JSON"),
    "invalid_job_dir": (WARN, "a job folder or JSON whose name is not a UUID"),
    # warnings of the report's database drift check
    "db_only": (WARN, "a job in the database with no JSON on disk"),
    "db_changed": (WARN, "the job's rows were changed since comsa-migrate wrote them"),
    "file_missing": (WARN, "a `job_files` row names a file that is not on disk"),
    "size_mismatch": (WARN, "a `job_files` size differs from the file on disk"),
    # info: nothing is wrong, but it is not stored as such
    "algorithm_list_truncated": (INFO, "`algorithm` was a list; its first element was kept"),
    "unmapped_fields": (INFO, "fields with no column were not stored"),
    "metadata_only": (INFO, "a metadata sidecar without `type` and `status`; not a job"),
    "stray_file": (INFO, "a file that is not part of the job store"),
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

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]
