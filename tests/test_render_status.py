"""The status text: one waiting job is "1 job", as every other count says it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from comsa_migrate.render.status import render_status
from comsa_migrate.sync.status import DaemonStatus, Status


def _daemon(queue_depth: int, oldest_pending_s: float | None) -> DaemonStatus:
    started = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    return DaemonStatus(
        id=1,
        name="web1:/srv/comsa/backend/data",
        data_dir="/srv/comsa/backend/data",
        hostname="web1",
        pid=4242,
        version="0.2.0",
        state="watching",
        liveness="running",
        started_at=started,
        stopped_at=None,
        heartbeat_age_s=1.0,
        last_sync_at=None,
        last_sync_age_s=None,
        last_job_id=None,
        last_action=None,
        last_lag_ms=None,
        queue_depth=queue_depth,
        oldest_pending_s=oldest_pending_s,
        actions={},
        counters={},
    )


@pytest.mark.parametrize(
    ("depth", "oldest", "line"),
    [
        (1, 2.0, "    lag         1 job waiting, the oldest for 2 s"),
        (1204, 75.0, "    lag         1,204 jobs waiting, the oldest for 75 s"),
        (0, None, "    lag         nothing waiting"),
    ],
)
def test_the_lag_line_counts_the_jobs_waiting(depth: int, oldest: float | None, line: str) -> None:
    text = render_status(Status(True, (_daemon(depth, oldest),), ()), "postgres@db/comsa")

    assert line in text.splitlines()
