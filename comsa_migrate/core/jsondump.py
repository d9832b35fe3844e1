"""Jobs as JSON for the database: orjson, and the standard library where orjson cannot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

__all__ = ["dumps"]


def dumps(value: Any) -> bytes:
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
