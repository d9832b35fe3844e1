"""Reading a job JSON's bytes: exact numbers, bounded nesting, and refusals as problem codes."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson

from comsa_migrate.core.layout import FILE_FLAGS, JobSource, os_reason
from comsa_migrate.problems import Problem

__all__ = ["MAX_DEPTH", "Invalid", "has_unstorable_escape", "load_json", "read_job_json"]

_UTF8_BOM = b"\xef\xbb\xbf"
#: a run of 19 digits may be an integer beyond 64 bits, which orjson reads as a float; it
#: is looked for with each digit made "0" and every other byte "x" (a regular expression
#: tries every position of every run of digits, and took four times as long as parsing)
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x78 for byte in range(256))
_LONG_DIGITS = b"0" * 19
#: a UTF-16 surrogate written as a JSON escape: orjson refuses one that is not paired
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: deeper documents are refused: no job nests beyond a few levels, and the payload
#: written to PostgreSQL must stay within orjson's encoder limit (254)
MAX_DEPTH = 200


class Invalid(Exception):
    """Data that cannot be taken: ``code`` is its problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_json(raw: bytes) -> Any:
    """The value of a job JSON's bytes; Invalid (invalid_json) for anything else."""
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    if not raw.strip():
        raise Invalid("invalid_json", "the file is empty")
    exact = _LONG_DIGITS in raw.translate(_DIGITS_AS_ZEROS)
    if exact:
        doc = _load_exact(raw)
    else:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if _SURROGATE_ESCAPE.search(raw) is None:
                raise Invalid("invalid_json", f"not valid JSON: {exc}") from None
            # maybe a lone surrogate: valid JSON, refused later only where it is stored
            exact = True
            doc = _load_exact(raw)
    if exact or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(doc)
    return doc


def _load_exact(raw: bytes) -> Any:
    """The stdlib reader keeps integers beyond 64 bits exact; orjson would round them."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    def finite(text: str) -> float:
        number = float(text)
        if math.isinf(number):
            raise ValueError(f"the number {text} is out of range")
        return number

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=refuse, parse_float=finite)
    except UnicodeDecodeError as exc:
        raise Invalid("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise Invalid("invalid_json", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise Invalid("invalid_json", f"not valid JSON: {exc}") from None


def _check_depth(doc: Any) -> None:
    """Refuse nesting beyond MAX_DEPTH (which orjson refuses too)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise Invalid("invalid_json", f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def has_unstorable_escape(raw: bytes) -> bool:
    """Whether the bytes escape U+0000 or a UTF-16 surrogate: only escapes bring them."""
    return b"\\u0000" in raw or _SURROGATE_ESCAPE.search(raw) is not None


def read_job_json(data_dir: Path, source: JobSource, max_bytes: int) -> bytes | Problem:
    """The bytes of a job JSON, or the problem that stops them from being read."""
    path = os.path.join(data_dir, source.json_path)
    try:
        # never follow a symlink, nor wait on a FIFO, put there since the scan
        fd = os.open(path, FILE_FLAGS)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Problem("unreadable", "not a regular file", source.job_id, source.json_path)
            data = b""
            if st.st_size <= max_bytes:
                # read(n) allocates n bytes first: ask for the size stat gave, plus one
                # byte to notice a file still growing, and only then for the rest
                data = fh.read(st.st_size + 1)
                if len(data) > st.st_size:
                    data += fh.read(max_bytes + 1 - len(data))
            size = max(st.st_size, len(data))
            if size > max_bytes:
                return Problem(
                    "file_too_large",
                    f"{size:,} bytes is over the limit of {max_bytes:,} (--max-json-bytes)",
                    source.job_id,
                    source.json_path,
                )
            return data
    except OSError as exc:
        return Problem("unreadable", os_reason(exc), source.job_id, source.json_path)
