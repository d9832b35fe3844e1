"""What the sync daemon counts since it started, in one place: its heartbeat, its stop and
its metrics all read the same snapshot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["COUNTERS", "LastSync", "StatsSnapshot", "SyncStats"]

#: the daemon's counters besides jobs by action, as its heartbeat and its run record them
COUNTERS = ("errors", "json_removed", "observer_restarts", "outages", "rescans")

#: the counters kept as counts; rescans is derived from the rescans by reason
_COUNTED = tuple(name for name in COUNTERS if name != "rescans")

Event = Literal["json_removed", "observer_restarts", "outages"]


@dataclass(frozen=True, slots=True)
class LastSync:
    job_id: str
    action: str
    at: float  # Unix time
    lag_ms: int | None


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """The counts at one moment, consistent with one another."""

    actions: dict[str, int]  # jobs synced since start, by action
    counters: dict[str, int]  # COUNTERS
    rescans: dict[str, int]  # by reason
    held_back: int  # retries of a job JSON that did not parse yet
    last: LastSync | None  # the last job synced, unless it was unchanged in a rescan
    last_write_at: float | None  # Unix time of the last job that was not unchanged
    last_lag_s: float | None  # first file event to commit, of the last job that had one

    def totals(self) -> dict[str, Any]:
        """What the daemon's run records when it stops."""
        return {"actions": dict(self.actions), **self.counters}

    def flat(self) -> dict[str, int]:
        """Jobs by action and every counter, in one mapping."""
        return {**self.actions, **self.counters, "held_back": self.held_back}


class SyncStats:
    """The daemon's counts. Its worker and the file observer add to them; the metrics'
    HTTP thread reads them: every method holds one lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._actions: Counter[str] = Counter()
        self._counters: Counter[str] = Counter(dict.fromkeys(_COUNTED, 0))
        self._rescans: Counter[str] = Counter()
        self._held_back = 0
        self._last: LastSync | None = None
        self._last_write_at: float | None = None
        self._last_lag_s: float | None = None

    def job_synced(self, job_id: str, action: str, lag_ms: int | None, *, quiet: bool) -> None:
        """A job written (or found unchanged); ``quiet``: an unchanged job of a rescan,
        which does not count as the last sync."""
        at = self._clock()
        with self._lock:
            self._actions[action] += 1
            if action != "unchanged":
                self._last_write_at = at
            if lag_ms is not None:
                self._last_lag_s = lag_ms / 1000
            if not (quiet and action == "unchanged"):
                self._last = LastSync(job_id, action, at, lag_ms)

    def error(self) -> None:
        with self._lock:
            self._counters["errors"] += 1

    def held_back(self) -> None:
        with self._lock:
            self._held_back += 1

    def rescan(self, reason: str) -> None:
        with self._lock:
            self._rescans[reason] += 1

    def count(self, event: Event) -> None:
        """One more JSON removed, observer restarted or outage (of the database or the file
        store)."""
        with self._lock:
            self._counters[event] += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                actions=dict(self._actions),
                counters={**self._counters, "rescans": self._rescans.total()},
                rescans=dict(self._rescans),
                held_back=self._held_back,
                last=self._last,
                last_write_at=self._last_write_at,
                last_lag_s=self._last_lag_s,
            )
