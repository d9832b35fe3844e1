"""A job as the one JSON document the database's apply_job() reads, and the settings of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from comsa_migrate.core.layout import utc_from_ns
from comsa_migrate.core.normalise import JobRecord
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES, InputEntry

__all__ = ["WriteSettings", "job_payload"]


@dataclass(frozen=True, slots=True)
class WriteSettings:
    """How jobs are written to this database: what the options ask and what it has."""

    path_prefix: str = "data/"  # DATA_DIR as the dashboard's working folder sees it
    store_inputs: bool = False  # copy uploads into job_input_files (which exists)
    max_input_bytes: int = 0
    owner_id: str | None = None  # users.id given to migrated jobs that have no owner
    inline_input_bytes: int = DEFAULT_INLINE_INPUT_BYTES  # larger uploads are streamed
    file_store: str | None = None  # --file-store: where the files' contents are kept

    @property
    def tag(self) -> str:
        """What a job's stored fingerprint adds to the stat fingerprint: a change of these
        settings (another prefix, job_input_files created, a file store) reads every job again."""
        inputs = f"inputs<={self.max_input_bytes}" if self.store_inputs else "no-inputs"
        return f"{self.path_prefix}|{inputs}" + (f"|{self.file_store}" if self.file_store else "")

    def fingerprint(self, source_fingerprint: str) -> str:
        return f"{source_fingerprint}|{self.tag}"


def job_payload(
    record: JobRecord, settings: WriteSettings, inputs: Sequence[InputEntry] | None = None
) -> bytes:
    """The job as one JSON document, the shape comsa_migrate.apply_job() reads.

    Paths are DATA_DIR-relative in the record; the payload gives them as the dashboard
    writes them, under ``settings.path_prefix``. ``inputs`` are the job's uploads for
    job_input_files, when it is written (Inputs.entries). The columns come first, in the
    order of normalise.JOB_COLUMNS (spelt out here: this runs once per job).
    """
    prefix = settings.path_prefix
    payload: dict[str, Any] = {
        "id": record.id,
        "type": record.type,
        "status": record.status,
        "algorithm": record.algorithm,
        "age_group": record.age_group,
        "country": record.country,
        "calib_model_type": record.calib_model_type,
        "ensemble": record.ensemble,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
        "error": record.error,
        "result": record.result,
        "input_file_path": (
            None if record.input_file_path is None else prefix + record.input_file_path
        ),
        "logs": record.logs,  # LogEntry tuples: _dumps() writes each as an array
        "files": [
            (f.file_type, f.file_name, prefix + f.file_path, f.size, utc_from_ns(f.mtime_ns))
            for f in record.source.files
        ],
        "fingerprint": settings.fingerprint(record.source.fingerprint),
        "source_path": record.source.json_path,
    }
    if settings.store_inputs and inputs is not None:
        payload["inputs"] = inputs
    if settings.owner_id is not None:
        payload["owner_id"] = settings.owner_id
    return _dumps(payload)


def _dumps(value: Any) -> bytes:
    try:
        # orjson takes plain tuples, not named ones: a LogEntry goes through `default`,
        # one at a time, rather than a list of tuples made first (a large log's copy)
        return orjson.dumps(value, default=tuple)
    except TypeError:  # integers beyond 64 bits, which orjson does not write
        import json

        return json.dumps(value, default=_iso, ensure_ascii=False).encode()


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
