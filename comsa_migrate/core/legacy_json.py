"""A job's rows -> the bytes of its legacy job JSON: the inverse of normalise.py.

Which JSON a job starts from:

- a migrated job, from its original JSON (the file store keeps it): each field whose
  normalised value is still the row's is left exactly as it was written (an algorithm
  list, "Completed", an ISO time with an offset, an error as a list of lines); a field
  the row changed gets the row's value in legacy form; fields that have no column are
  never touched. A job the row has not changed at all is its original bytes;
- a job the dashboard created, from its metadata sidecar when the file store keeps one
  (the algorithm list, use_sample_data, the demo's and the MCMC settings), with the row
  over it, in the legacy writer's field order.

Legacy forms (core/legacy_form.py has the formats): a time as ``YYYY-MM-DD HH:MM:SS``; R's
NULL as ``{}``; an error ``{"message": m}`` as the string m; each log line with its
``[YYYY-MM-DD HH:MM:SS] `` prefix (a line of the original keeps its own form); the input
file as the legacy backend opens it from backend/ (``data/uploads/<id>/input.csv``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from comsa_migrate.core.jsonread import load_json
from comsa_migrate.core.layout import JOBS, JobSource
from comsa_migrate.core.legacy_form import LEGACY_FIELD_ORDER, LOG_PREFIX, legacy_time, log_line
from comsa_migrate.core.normalise import JobRecord, LogEntry, parse_job
from comsa_migrate.problems import Problem, Severity

__all__ = ["JobRow", "LegacyJson", "legacy_input_file", "legacy_job_json"]

#: what the legacy backend's paths start with: DATA_DIR seen from its backend/ folder
LEGACY_DATA = "data/"
_TEXT_FIELDS = ("type", "status", "algorithm", "age_group", "country", "calib_model_type")
_TIME_FIELDS = ("created_at", "started_at", "completed_at")
#: R's NULL, as jsonlite's toJSON(auto_unbox = TRUE) writes it
_NULL: dict[str, Any] = {}
#: a field to take out of the JSON (no input file any more)
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the dashboard's tables hold it now: its `jobs` row and its log lines."""

    id: str
    type: str
    status: str
    algorithm: str | None
    age_group: str | None
    country: str | None
    calib_model_type: str | None
    ensemble: bool | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: Any  # jsonb: None (SQL NULL), {} or {"message": ...}
    result: Any
    input_file_path: str | None  # as the row holds it: under the dashboard's path prefix
    logs: tuple[LogEntry, ...]  # in the dashboard's order: by timestamp


@dataclass(frozen=True, slots=True)
class LegacyJson:
    """A job's legacy JSON, and what was found on the way."""

    content: bytes
    verbatim: bool  # the original's bytes, unchanged
    problems: tuple[Problem, ...] = ()


def legacy_job_json(
    row: JobRow,
    stored: bytes | None,
    stored_mtime_ns: int,
    *,
    path_prefix: str,
    data_dir: Path,
) -> LegacyJson:
    """The legacy JSON of ``row``; ``stored`` is the job JSON the file store keeps (the
    original, or the dashboard's sidecar), with the mtime it had."""
    problems: list[Problem] = []
    sidecar: dict[str, Any] = {}
    if stored is not None:
        source = JobSource(
            row.id, f"{JOBS}/{row.id}.json", len(stored), stored_mtime_ns, 0, (), (), ""
        )
        parsed = parse_job(stored, source, data_dir)
        if parsed.record is not None:
            from_mtime = any(p.code == "created_at_from_mtime" for p in parsed.problems)
            return _over_original(
                row, stored, parsed.record, path_prefix, created_at_from_mtime=from_mtime
            )
        if parsed.metadata_only:
            sidecar = load_json(stored)
        else:
            why = (
                "; ".join(p.message for p in parsed.problems if p.severity is Severity.ERROR)
                or "not a job"
            )
            problems.append(
                Problem(
                    "original_unreadable",
                    f"the stored job JSON is not a job ({why}); rebuilt from the row",
                    row.id,
                    source.json_path,
                )
            )
    return LegacyJson(_dump(_from_row(row, sidecar, path_prefix)), False, tuple(problems))


def legacy_input_file(path: str | None, path_prefix: str) -> str | None:
    """``jobs.input_file_path`` as the legacy backend opens it, from its backend/ folder."""
    if path is None:
        return None
    if path_prefix and path.startswith(path_prefix):
        return LEGACY_DATA + path[len(path_prefix) :]
    if not path_prefix and not path.startswith(("/", LEGACY_DATA)):
        return LEGACY_DATA + path
    return path


def _over_original(
    row: JobRow,
    stored: bytes,
    record: JobRecord,
    path_prefix: str,
    *,
    created_at_from_mtime: bool,
) -> LegacyJson:
    """``created_at_from_mtime``: the original has no created_at, and the backfill took its
    file's mtime, which a rebuilt JSON does not keep: it then carries the time itself."""
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if getattr(record, name) != getattr(row, name):
            changes[name] = getattr(row, name) if getattr(row, name) is not None else _NULL
    if record.ensemble != row.ensemble:
        changes["ensemble"] = row.ensemble if row.ensemble is not None else _NULL
    for name in _TIME_FIELDS:
        if getattr(record, name) != getattr(row, name):
            changes[name] = _time(getattr(row, name))
    if not _same_json(record.error or None, row.error or None):
        changes["error"] = _legacy_error(row.error)
    if not _same_json(record.result or None, row.result or None):
        changes["result"] = row.result or _NULL
    wanted = legacy_input_file(row.input_file_path, path_prefix)
    had = legacy_input_file(
        None if record.input_file_path is None else path_prefix + record.input_file_path,
        path_prefix,
    )
    if wanted != had:
        changes["input_file"] = _ABSENT if wanted is None else wanted
    if tuple(record.logs) != tuple(row.logs):
        changes["log"] = _log_lines(row.logs, record.logs)
    if not changes:
        return LegacyJson(stored, True)
    if created_at_from_mtime:
        changes["created_at"] = _time(row.created_at)
    doc = load_json(stored)
    return LegacyJson(_dump(_merged(doc, changes)), False)


def _same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as jsonb holds them: numbers by their exact
    value (jsonb writes 1.2346e+23 as 123460000000000000000000, 1e-7 as 0.0000001, which
    come back as other Python types), true and false apart from 1 and 0, objects in any
    key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return _exact(a) == _exact(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _exact(number: float) -> Decimal:
    """A float as the decimal digits it was written with (its shortest repr, which orjson
    writes too); an int as itself."""
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


def _from_row(row: JobRow, sidecar: dict[str, Any], path_prefix: str) -> dict[str, Any]:
    """A job the dashboard created: its sidecar's fields, the row over them."""
    doc: dict[str, Any] = {key: value for key, value in sidecar.items() if key != "id"}
    algorithm = sidecar.get("algorithm")
    doc.update(
        id=row.id,
        type=row.type,
        status=row.status,
        # the sidecar's list over the column, as the dashboard's load_job() reads it
        algorithm=algorithm if algorithm not in (None, [], "") else _or_null(row.algorithm),
        age_group=_or_null(row.age_group),
        country=_or_null(row.country),
        calib_model_type=_or_null(row.calib_model_type),
        ensemble=row.ensemble if row.ensemble is not None else _NULL,
        created_at=_time(row.created_at),
        started_at=_time(row.started_at),
        completed_at=_time(row.completed_at),
        error=_legacy_error(row.error),
        result=row.result or _NULL,
        log=_log_lines(row.logs, ()),
    )
    input_file = legacy_input_file(row.input_file_path, path_prefix)
    if input_file is not None:
        doc["input_file"] = input_file
    return _merged({}, doc)


def _log_lines(logs: tuple[LogEntry, ...], original: tuple[LogEntry, ...]) -> list[str]:
    """Each line of the original as it was; each other line (the dashboard stores them
    without a prefix) with the legacy prefix of its time, unless it has one already."""
    kept = set(original)
    return [
        entry.message
        if entry in kept or LOG_PREFIX.match(entry.message)
        else log_line(entry.timestamp, entry.message)
        for entry in logs
    ]


def _legacy_error(error: Any) -> Any:
    """The dashboard's {"message": m} as the legacy string m; no error as R's NULL."""
    if not error:
        return _NULL
    if (
        isinstance(error, dict)
        and error.keys() == {"message"}
        and isinstance(error["message"], str)
    ):
        return error["message"]
    return error


def _time(moment: datetime | None) -> Any:
    return _NULL if moment is None else legacy_time(moment)


def _or_null(value: str | None) -> Any:
    return _NULL if value is None else value


def _merged(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``changes``: a key it has stays where it is; a new one goes where the
    legacy writer put it (after the last key before it in LEGACY_FIELD_ORDER)."""
    rank = {key: n for n, key in enumerate(LEGACY_FIELD_ORDER)}
    keys = [key for key in doc if changes.get(key) is not _ABSENT]
    for key, value in changes.items():
        if key in doc or value is _ABSENT:
            continue
        if key not in rank:
            keys.append(key)
            continue
        position = 0
        for n, existing in enumerate(keys):
            if rank.get(existing, len(rank)) < rank[key]:
                position = n + 1
        keys.insert(position, key)
    return {key: changes[key] if key in changes else doc[key] for key in keys}


def _dump(doc: dict[str, Any]) -> bytes:
    """Compact, UTF-8, one line and a newline: as jsonlite's toJSON() and R's writeLines()
    wrote it."""
    try:
        return orjson.dumps(doc) + b"\n"
    except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits (jsonread)
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8", "surrogatepass") + b"\n"
