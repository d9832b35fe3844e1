"""Per-job debouncing: events for one job are coalesced until it has been quiet for a while."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

__all__ = ["Debouncer"]


class Debouncer:
    """Job ids with deadlines, and the one Condition the daemon's worker waits on.

    Each event pushes its job's deadline to ``now + delay``, but never past
    ``first event + max_delay``, so that a file written without pause is still synced.
    ``wake()`` interrupts a wait for anything else the worker must look at (a stop,
    a rescan request). The lock is re-entrant so that a signal handler running on the
    waiting thread can call ``wake()``.
    """

    def __init__(
        self,
        delay: float,
        max_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.delay = delay
        self.max_delay = max(max_delay, delay)
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._deadlines: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        # (deadline, job id); an entry is stale once the job's deadline has moved
        self._heap: list[tuple[float, str]] = []
        self._woken = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._deadlines)

    def add(self, job_id: str, delay: float | None = None) -> None:
        """Note an event for ``job_id``; it becomes due after ``delay`` quiet seconds."""
        now = self._clock()
        with self._cond:
            first = self._first_seen.setdefault(job_id, now)
            deadline = min(now + (self.delay if delay is None else delay), first + self.max_delay)
            if self._deadlines.get(job_id) == deadline:
                return
            earliest = self._earliest()
            self._deadlines[job_id] = deadline
            heapq.heappush(self._heap, (deadline, job_id))
            if len(self._heap) > 4 * len(self._deadlines) + 64:  # a busy file: drop stale entries
                self._heap = [(d, j) for j, d in self._deadlines.items()]
                heapq.heapify(self._heap)
            if earliest is None or deadline < earliest:
                self._cond.notify_all()

    def pop_due(self, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` jobs whose deadline has passed, with when each was first seen."""
        now = self._clock()
        due: list[tuple[str, float]] = []
        with self._cond:
            while len(due) < limit:
                earliest = self._earliest()
                if earliest is None or earliest > now:
                    break
                _, job_id = heapq.heappop(self._heap)
                del self._deadlines[job_id]
                due.append((job_id, self._first_seen.pop(job_id)))
        return due

    def clear(self) -> None:
        """Forget every job waiting; retries that are still due are added again."""
        with self._cond:
            self._deadlines.clear()
            self._first_seen.clear()
            self._heap.clear()

    def oldest_first_seen(self) -> float | None:
        with self._cond:
            return min(self._first_seen.values(), default=None)

    def wait(self, until: float | None) -> None:
        """Block until a job is due, ``wake()`` is called, or the clock reaches ``until``."""
        with self._cond:
            while not self._woken:
                limits = [t for t in (self._earliest(), until) if t is not None]
                if not limits:
                    self._cond.wait()
                    continue
                remaining = min(limits) - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._woken = False

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _earliest(self) -> float | None:
        """The earliest live deadline, dropping stale heap entries on the way."""
        while self._heap:
            deadline, job_id = self._heap[0]
            if self._deadlines.get(job_id) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None
