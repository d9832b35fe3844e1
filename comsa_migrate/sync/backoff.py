"""Capped exponential backoff, the one way the sync daemon waits before trying again."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Pauses of ``first``, twice that, four times that... up to ``cap``, until ``reset()``.

    Used for reconnecting after an outage, for polling a lock another daemon holds, for
    pausing after an unexpected error, and for retrying a job JSON that does not parse
    yet. Not thread-safe: each user owns its own.
    """

    def __init__(self, first: float, cap: float, clock: Callable[[], float] = time.monotonic):
        if not 0 <= first <= cap:
            raise ValueError(f"a backoff needs 0 <= first <= cap, not {first} and {cap}")
        self.first = first
        self.cap = cap
        self._clock = clock
        self.failures = 0  # since the last reset()
        self.next_at = 0.0  # the clock's time of the next attempt; 0: at once

    @property
    def pause(self) -> float:
        """The pause the next failure brings."""
        return min(self.first * 2.0 ** min(self.failures, 64), self.cap)

    def failed(self) -> float:
        """One more failure: returns the pause, and the next attempt is due after it."""
        pause = self.pause
        self.failures += 1
        self.next_at = self._clock() + pause
        return pause

    def due(self) -> bool:
        """True once the pause after the last failure is over."""
        return self._clock() >= self.next_at

    def reset(self) -> None:
        """A success: the next failure pauses ``first`` again, and an attempt is due at once."""
        self.failures = 0
        self.next_at = 0.0
