"""The formatting every rendering shares: actions, plurals, sizes, times, ages, wrapped fields."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime

from comsa_migrate.observer import ACTIONS

__all__ = [
    "WIDTH",
    "actions_done",
    "age",
    "counted",
    "done",
    "field",
    "human_bytes",
    "number",
    "planned",
    "plural",
    "utc_time",
    "wrap",
]

#: the columns of text output
WIDTH = 80
#: an action as a run reports what it did; an action missing here reads as itself
_DONE = {"insert": "inserted", "update": "updated", "skip": "skipped", "conflict": "conflicts"}


def done(action: str) -> str:
    """An action as the word after its count in what a run did: insert → "3 inserted"."""
    return _DONE.get(action, planned(action))


def planned(action: str) -> str:
    """An action as the word after its count in what a run would do: "2 metadata only"."""
    return action.replace("_", " ")


def actions_done(counts: Mapping[str, int]) -> str:
    """What a run did to its jobs: "11 inserted, 0 updated, 0 unchanged, 0 skipped, 0 conflicts".

    metadata_only is left out: it counts jobs that are also in another action.
    """
    return ", ".join(
        f"{number(counts.get(a, 0))} {done(a)}" for a in ACTIONS if a != "metadata_only"
    )


def plural(n: int, word: str) -> str:
    """``word`` as it follows the number ``n``: job, jobs."""
    return word if n == 1 else f"{word}s"


def number(n: int) -> str:
    """A count as every text for people writes it, with thousands separators: "20,000".

    JSON keeps plain numbers; process ids, ports and other identifiers are not counts.
    """
    return f"{n:,}"


def counted(n: int, word: str) -> str:
    """``n`` with thousands separators and its word: "1 error", "1,204 job files"."""
    return f"{number(n)} {plural(n, word)}"


def human_bytes(n: int) -> str:
    """A size in binary units: "512 bytes", "3.4 MiB"; GiB at most."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def utc_time(value: datetime) -> str:
    """A moment to the second, in UTC: "2026-12-02 16:00:59 UTC"."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float) -> str:
    """How long ago, in the largest unit that keeps it readable: "9 s", "12 min", "3 days"."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def wrap(text: str, first: str, rest: str, *, break_on_hyphens: bool = False) -> list[str]:
    """``text`` in lines of WIDTH columns at most, the first after ``first``, the others
    after ``rest``; empty text is the first indent alone, without its trailing spaces.

    Words are kept whole at their hyphens (--max-json-bytes, uuids) unless asked. A word
    longer than a line is cut after a "/" (see _Wrapper).
    """
    wrapper = _Wrapper(
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=break_on_hyphens,
    )
    return wrapper.wrap(text) or [first.rstrip()]


class _Wrapper(textwrap.TextWrapper):
    """Cuts a word too long for a line after its last "/" that fits, and mid-word only
    where no "/" does: a path or a DSN is cut between its parts, and a database name
    (63 characters at most, shorter than any line) stays whole."""

    def _handle_long_word(
        self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int
    ) -> None:
        chunk = reversed_chunks[-1]
        slash = chunk.rfind("/", 0, max(width - cur_len, 1))
        if slash <= 0:
            super()._handle_long_word(reversed_chunks, cur_line, cur_len, width)
            return
        cur_line.append(chunk[: slash + 1])
        reversed_chunks[-1] = chunk[slash + 1 :]


def field(label: str, text: str) -> str:
    """A labelled field of a summary: the label in 11 columns after two spaces, the text
    wrapped under its own indent."""
    return "\n".join(wrap(text, f"  {label:<11} ", " " * 14))
