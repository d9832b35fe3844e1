"""Bytes of one legacy job JSON -> a normalised JobRecord plus problems (no database)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from comsa_migrate.core.jsonread import Invalid, has_unstorable_escape, load_json
from comsa_migrate.core.layout import JobSource, is_job_id, is_utf8, utc_from_ns
from comsa_migrate.core.legacy_form import LOG_PREFIX
from comsa_migrate.problems import Problem

__all__ = ["COLUMN_LIMITS", "JOB_COLUMNS", "JobRecord", "LogEntry", "Parsed", "parse_job"]

STATUSES = ("pending", "running", "completed", "failed")
#: VARCHAR limits of the `jobs` table (see schema/001_initial_schema.sql)
COLUMN_LIMITS = {
    "type": 50,
    "status": 20,
    "algorithm": 50,
    "age_group": 50,
    "country": 100,
    "calib_model_type": 50,
}
#: the columns of `jobs` that comsa-migrate writes, as JobRecord and the payload name them
#: (those of the dashboard's 001). The schema's functions name them one by one
#: (written_job() in 20_job_content.sql, the upsert of 40_apply_job.sql):
#: tests/test_schema_functions.py checks that they name these.
JOB_COLUMNS = (
    "id",
    "type",
    "status",
    "algorithm",
    "age_group",
    "country",
    "calib_model_type",
    "ensemble",
    "created_at",
    "started_at",
    "completed_at",
    "error",
    "result",
    "input_file_path",
)
#: the keys of a legacy job JSON that the record takes: its columns, with the upload's
#: path and the log named as the legacy writer names them
MAPPED_KEYS = frozenset(JOB_COLUMNS) - {"input_file_path"} | {"input_file", "log"}
#: what separates two log lines stamped with one second, in file order
LOG_STEP = timedelta(microseconds=1)


class LogEntry(NamedTuple):
    """One line of a job's log; a named tuple, as a job has a dozen and a backfill
    makes one for each (FileStat says why)."""

    timestamp: datetime
    message: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as it will stand in the `jobs`, `job_logs` and `job_files` tables."""

    id: str
    type: str
    status: str
    algorithm: str | None
    age_group: str | None
    country: str | None
    calib_model_type: str | None
    ensemble: bool
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: dict[str, Any]
    result: dict[str, Any]
    input_file_path: str | None
    logs: tuple[LogEntry, ...]
    source: JobSource


@dataclass(frozen=True, slots=True)
class Parsed:
    """The outcome of reading one job JSON: a record, or None with the error that stops it."""

    record: JobRecord | None
    problems: tuple[Problem, ...]
    metadata_only: bool = False


def parse_job(raw: bytes, source: JobSource, data_dir: Path) -> Parsed:
    """Normalise the bytes of ``source``'s JSON; never raises for bad data."""
    notes: list[Problem] = list(source.problems)

    def note(code: str, message: str) -> None:
        notes.append(Problem(code, message, source.job_id, source.json_path))

    try:
        doc = load_json(raw)
        if not isinstance(doc, dict):
            raise Invalid("not_an_object", f"top-level JSON is {_kind(doc)}, not an object")
        if _absent(doc.get("type")) and _absent(doc.get("status")):
            note("metadata_only", "no `type` and no `status`: a metadata sidecar, not a job")
            return Parsed(None, tuple(notes), metadata_only=True)
        if has_unstorable_escape(raw):
            _reject_unstorable(doc)
        record = _normalise(doc, source, data_dir, note)
    except Invalid as exc:
        note(exc.code, str(exc))
        return Parsed(None, tuple(notes))
    return Parsed(record, tuple(notes))


def _normalise(doc: dict[str, Any], source: JobSource, data_dir: Path, note: Any) -> JobRecord:
    job_id = _job_id(doc.get("id"), source, note)
    job_type = _limited("type", _required_text(doc, "type"))
    status = _required_text(doc, "status").lower()
    if status not in STATUSES:
        raise Invalid("invalid_status", f"status {doc['status']!r} is not one of {STATUSES}")
    algorithms = _algorithms(doc.get("algorithm"))
    algorithm = _limited("algorithm", algorithms[0]) if algorithms else ""
    if len(algorithms) > 1:
        note("algorithm_list_truncated", f"algorithm list {algorithms} kept {algorithms[0]!r}")
    created_at = _timestamp(doc, "created_at")
    if created_at is None:
        created_at = utc_from_ns(source.json_mtime_ns)
        note("created_at_from_mtime", f"no created_at; used the file's mtime {created_at}")
    started_at = _timestamp(doc, "started_at")
    unmapped = sorted(key for key in doc if key not in MAPPED_KEYS)
    if unmapped:
        note("unmapped_fields", "not stored: " + ", ".join(unmapped))
    return JobRecord(
        id=job_id,
        type=job_type,
        status=status,
        algorithm=algorithm or None,
        age_group=_optional_text(doc, "age_group"),
        country=_optional_text(doc, "country"),
        calib_model_type=_optional_text(doc, "calib_model_type"),
        ensemble=_ensemble(doc.get("ensemble"), len(algorithms)),
        created_at=created_at,
        started_at=started_at,
        completed_at=_timestamp(doc, "completed_at"),
        error=_error(doc.get("error")),
        result=_result(doc.get("result")),
        input_file_path=_input_file_path(doc.get("input_file"), data_dir, note),
        logs=_logs(doc.get("log"), started_at or created_at),
        source=source,
    )


def _reject_unstorable(doc: dict[str, Any]) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000 nor a lone UTF-16 surrogate (no UTF-8
    has it); fields that are not stored may hold either."""
    for key in MAPPED_KEYS & doc.keys():
        stack = [doc[key]]
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                if "\x00" in value:
                    raise Invalid(
                        "invalid_field", f"`{key}` holds U+0000, which PostgreSQL cannot store"
                    )
                if not is_utf8(value):
                    raise Invalid(
                        "invalid_field",
                        f"`{key}` holds a lone UTF-16 surrogate, which PostgreSQL cannot store",
                    )
            elif isinstance(value, dict):
                stack.extend(value)
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)


def _absent(value: Any) -> bool:
    """jsonlite writes R's NULL as {}; empty strings and lists mean nothing too."""
    return value is None or value == {} or value == [] or value == ""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _job_id(value: Any, source: JobSource, note: Any) -> str:
    if _absent(value):
        note("missing_id", f"no id; used the file name {source.job_id}")
        return source.job_id
    if not isinstance(value, str) or not is_job_id(value):
        raise Invalid("invalid_job_id", f"id {value!r} is not a UUID")
    if value.lower() != source.job_id:
        raise Invalid("id_mismatch", f"id {value!r} differs from the file name")
    return source.job_id


def _required_text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if _absent(value):
        raise Invalid("missing_field", f"required field `{key}` is missing")
    if not isinstance(value, str):
        raise Invalid("invalid_field", f"`{key}` is {_kind(value)}, not a string")
    return value


def _optional_text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if _absent(value):
        return None
    if not isinstance(value, str):
        raise Invalid("invalid_field", f"`{key}` is {_kind(value)}, not a string")
    return _limited(key, value)


def _limited(key: str, value: str) -> str:
    limit = COLUMN_LIMITS[key]
    if len(value) > limit:
        raise Invalid(
            "invalid_field", f"`{key}` has {len(value):,} characters; the column allows {limit:,}"
        )
    return value


def _algorithms(value: Any) -> list[str]:
    if _absent(value):
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise Invalid("invalid_field", f"`algorithm` must be text or a list of text: {value!r}")
    return items


def _ensemble(value: Any, n_algorithms: int) -> bool:
    if _absent(value):
        return n_algorithms > 1
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.upper() in ("TRUE", "FALSE"):
        return value.upper() == "TRUE"
    raise Invalid("invalid_field", f"`ensemble` must be a boolean, TRUE or FALSE: {value!r}")


def parse_timestamp(text: str) -> datetime:
    """ "YYYY-MM-DD HH:MM:SS[.ffffff]" or ISO 8601; an explicit offset is converted to UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _timestamp(doc: dict[str, Any], key: str) -> datetime | None:
    value = doc.get(key)
    if _absent(value) or value == "NA":
        return None
    if not isinstance(value, str):
        raise Invalid("invalid_timestamp", f"`{key}` is {_kind(value)}, not a timestamp")
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        raise Invalid("invalid_timestamp", f"`{key}` {value!r} is not a timestamp") from None


def _error(value: Any) -> dict[str, Any]:
    if _absent(value):
        return {}
    if isinstance(value, str):
        return {"message": value}
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return {"message": "\n".join(value)}
    if isinstance(value, dict):
        return value
    raise Invalid("invalid_field", f"`error` is {_kind(value)}; expected a string or an object")


def _result(value: Any) -> dict[str, Any]:
    # [] is how jsonlite writes an empty R list; an empty string is no object
    if value is None or value == {} or value == []:
        return {}
    if isinstance(value, dict):
        return value
    raise Invalid("invalid_field", f"`result` is {_kind(value)}, not an object")


def _logs(value: Any, first_default: datetime) -> tuple[LogEntry, ...]:
    """Each line whole as its message, as the user saw it; its prefix's time as its timestamp.

    The dashboard reads logs ORDER BY timestamp, and legacy lines are stamped to the
    second: each line's time is made later than the line before it by at least LOG_STEP,
    so that the order by time is the file's order. A line without a prefix (the first:
    ``first_default``) takes the line before's time plus a step.
    """
    if _absent(value):
        return ()
    lines = value if isinstance(value, list) else [value]
    entries: list[LogEntry] = []
    previous: datetime | None = None
    for line in lines:
        if not isinstance(line, str):
            raise Invalid("invalid_field", f"log line {line!r} is not a string")
        stamped = _log_time(line)
        if previous is None:
            moment = stamped or first_default
        elif stamped is not None and stamped > previous:
            moment = stamped
        else:
            moment = previous + LOG_STEP
        entries.append(LogEntry(moment, line))
        previous = moment
    return tuple(entries)


def _log_time(line: str) -> datetime | None:
    match = LOG_PREFIX.match(line)
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match.group(1))  # the regex fixed its shape
    except ValueError:
        reason = f"log line prefix [{match.group(1)}] is not a date"
        raise Invalid("invalid_timestamp", reason) from None


def _input_file_path(value: Any, data_dir: Path, note: Any) -> str | None:
    """Legacy paths are relative to backend/ ("data/uploads/<id>/input.csv")."""
    if _absent(value):
        return None
    if not isinstance(value, str):
        raise Invalid("invalid_field", f"`input_file` is {_kind(value)}, not a path")
    root = os.path.abspath(data_dir)
    candidates = [os.path.join(os.path.dirname(root), value)]
    first, _, rest = value.replace("\\", "/").partition("/")
    if first == "data" and rest:
        # "data/" names DATA_DIR itself, whatever the folder is called here
        candidates.append(os.path.join(root, rest))
    candidates.append(os.path.join(root, value))
    inside = [rel for rel in (_relative_inside(c, root) for c in candidates) if rel is not None]
    if not inside:
        note("input_path_outside_root", f"input_file {value!r} is outside DATA_DIR; stored as NULL")
        return None
    for rel in inside:
        if os.path.lexists(os.path.join(root, rel)):
            return rel
    note("missing_input_file", f"input_file {value!r} is not on disk")
    return inside[0]


def _relative_inside(candidate: str, root: str) -> str | None:
    path = os.path.normpath(candidate)
    if path != root and path.startswith(root + os.sep):
        return path[len(root) + 1 :].replace(os.sep, "/")
    return None
