"""Structured log lines for the sync daemon: one JSON object per line (--log-format json)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from comsa_migrate.problems import printable

__all__ = ["JsonFormatter", "TEXT_FORMAT"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: fields the daemon passes as ``extra=``, copied into each JSON line when present
FIELDS = ("job_id", "action", "ms", "lag_ms", "code", "path")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...}``; a per-job line adds job_id, action, ms."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": printable(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = printable(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()
