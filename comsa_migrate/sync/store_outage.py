"""An object store failing while a batch's contents are put (an S3 endpoint down, say).

Nothing of that batch was written. It is the store's outage, not the database's: the jobs
stay pending (new ones are still queued), the database session, its heartbeat and its
lease are kept, and no batch is written until a pause, doubling while the failure
recurs, is over; then the jobs that failed go first. Logged once when it starts and once
when a batch is written again, and counted in ``outages``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from comsa_migrate.sync.backoff import Backoff
from comsa_migrate.sync.log_text import LogWords
from comsa_migrate.sync.stats import SyncStats

__all__ = ["StoreOutage"]

log = logging.getLogger(__name__)


class StoreOutage:
    """Whether the file store is down, since when, and when to try it again."""

    def __init__(
        self,
        backoff: Backoff,
        stats: SyncStats,
        words: LogWords,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backoff, self._stats, self._words, self._clock = backoff, stats, words, clock
        self.down_since: float | None = None

    def due(self) -> bool:
        """Whether a batch may be written: the store is up, or its pause is over."""
        return self.down_since is None or self._backoff.due()

    @property
    def next_at(self) -> float:
        """When the pause is over (monotonic; 0: no pause)."""
        return self._backoff.next_at

    def failed(self, cause: str, pending: int) -> None:
        """A batch's contents could not be put: the pause starts, or doubles."""
        if self.down_since is None:
            self.down_since = self._clock()
            self._stats.count("outages")
            self._backoff.reset()
            log.warning(
                "the file store is unavailable (%s); keeping %s pending and retrying "
                "every %g s at most",
                cause,
                self._words.counted(pending, "job"),
                self._backoff.cap,
            )
        else:
            log.debug("still no file store: %s", cause)
        self._backoff.failed()

    def recovered(self) -> None:
        """A batch was written after the pause: the jobs that failed, which go first."""
        if self.down_since is not None:
            log.info("the file store is back after %.0f s", self._clock() - self.down_since)
            self.down_since = None
            self._backoff.reset()
