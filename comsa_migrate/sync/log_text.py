"""The words of the daemon's log lines: counts of jobs and what a rescan did to them.

Whoever runs the daemon hands it a LogWords; the CLI hands it render.formatting, the words
of every text for people. A library user that hands none gets PLAIN_WORDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["PLAIN_WORDS", "LogWords"]


class LogWords(Protocol):
    def number(self, n: int) -> str:
        """A count: "20,000"."""
        ...

    def counted(self, n: int, word: str) -> str:
        """A count and its word: "1 job", "3 jobs"."""
        ...

    def actions_done(self, counts: Mapping[str, int]) -> str:
        """What a run did to its jobs, by action."""
        ...


class _PlainWords:
    """Numbers as Python writes them, and the actions by their names."""

    def number(self, n: int) -> str:
        return str(n)

    def counted(self, n: int, word: str) -> str:
        return f"{n} {word}"

    def actions_done(self, counts: Mapping[str, int]) -> str:
        return ", ".join(f"{action}={n}" for action, n in counts.items())


PLAIN_WORDS: LogWords = _PlainWords()
