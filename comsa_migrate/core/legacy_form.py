"""The legacy backend's forms, one definition each for both directions: its time format, its
log-line prefix, and the order in which it wrote a job's fields.

The legacy backend (the dashboard's ``backend/plumber.R`` and ``backend/jobs/processor.R``
before it moved to PostgreSQL) stamped every time with R's ``format(Sys.time())``:
``YYYY-MM-DD HH:MM:SS``, and every log line with ``"[" + that + "] "``. normalise.py
reads both; legacy_json.py writes both.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = [
    "LEGACY_FIELD_ORDER",
    "LOG_PREFIX",
    "TIME_FORMAT",
    "legacy_time",
    "log_line",
]

#: R's format(Sys.time()) as the legacy backend wrote created_at, started_at, completed_at
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: the prefix of a legacy log line; its group is the time in TIME_FORMAT
LOG_PREFIX = re.compile(r"\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\]")
#: the fields of a job JSON in the order the legacy writer's list() made them (POST /jobs
#: and /jobs/demo, then what a later assignment appended: input_file, the demo's fields,
#: rerun_of); a field not named here goes after these, in the order it came
LEGACY_FIELD_ORDER = (
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
    "log",
    "input_file",
    "use_sample_data",
    "demo_id",
    "demo_name",
    "rerun_of",
)


def legacy_time(moment: datetime) -> str:
    """``moment`` in TIME_FORMAT; with ``.ffffff`` after it when it has a fraction of a
    second (a time the database-backed dashboard stamped with NOW()), so that the
    normaliser reads back the very value, as R's as.character() of it shows it."""
    text = moment.strftime(TIME_FORMAT)
    return f"{text}.{moment.microsecond:06d}" if moment.microsecond else text


def log_line(moment: datetime, message: str) -> str:
    """A log line as the legacy add_log() wrote it: its time to the second, then the message."""
    return f"[{moment.strftime(TIME_FORMAT)}] {message}"
