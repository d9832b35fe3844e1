"""Noticing that most of the legacy tree vanished at once, as an unmounted share makes it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from math import inf
from pathlib import Path

from comsa_migrate.core import tree
from comsa_migrate.core.layout import JOBS
from comsa_migrate.sync.log_text import PLAIN_WORDS, LogWords

__all__ = ["TreeGuard"]

log = logging.getLogger(__name__)

#: how often a tree that is still missing is logged again
LOG_EVERY_S = 60.0
#: at most one count of the job JSONs a second while files keep disappearing
CHECK_EVERY_S = 1.0


class TreeGuard:
    """Counts the job JSONs when something disappears, and says when most of them are gone.

    The tree counts as missing when it has no jobs/ folder, or when fewer than
    ``fraction`` of the job JSONs last seen remain out of at least ``min_jobs``.
    ``suspect()`` may be called from any thread; the rest from the worker.
    """

    def __init__(
        self,
        root: Path,
        fraction: float,
        min_jobs: int,
        clock: Callable[[], float],
        words: LogWords = PLAIN_WORDS,
    ) -> None:
        self.root = root
        self.words = words
        self.fraction = fraction
        self.min_jobs = min_jobs
        self.clock = clock
        self.jobs = 0  # job JSONs at the last check that found the tree whole
        self.missing_since: float | None = None
        self._lock = threading.Lock()
        self._check_at: float | None = None
        self._last_check = -inf
        self._logged_at = -inf

    @property
    def next_check(self) -> float:
        """When the worker should look again (inf: nothing to look at)."""
        with self._lock:
            return inf if self._check_at is None else self._check_at

    def suspect(self) -> None:
        """Something disappeared: count again soon."""
        with self._lock:
            if self._check_at is None:
                self._check_at = max(self.clock(), self._last_check + CHECK_EVERY_S)

    def scanned(self) -> None:
        """A full scan just walked the tree: its count is the new reference."""
        self.jobs = tree.count_job_files(self.root)

    def check(self) -> str:
        """ "whole", "missing" (still or newly), or "returned" (it was missing until now)."""
        now = self.clock()
        with self._lock:
            due = self._check_at is not None and now >= self._check_at
            if due:
                self._check_at = None
        if not due and self.missing_since is None:
            return "whole"
        self._last_check = now
        present = tree.count_job_files(self.root) if (self.root / JOBS).is_dir() else -1
        if present >= 0 and (self.jobs < self.min_jobs or present >= self.jobs * self.fraction):
            self.jobs = present
            if self.missing_since is None:
                return "whole"
            log.warning(
                "the data folder is back (%s); resuming", self.words.counted(present, "job JSON")
            )
            self.missing_since = None
            self._logged_at = -inf
            return "returned"
        if self.missing_since is None:
            self.missing_since = now
        if now >= self._logged_at + LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "most of %s is gone (%s of the %s last seen) for %.0f s: "
                "is the share unmounted? Not syncing until it returns",
                self.root,
                "no jobs folder" if present < 0 else self.words.number(present),
                self.words.counted(self.jobs, "job JSON"),
                now - self.missing_since,
            )
        return "missing"
