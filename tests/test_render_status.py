"""The status text: one waiting job is "1 job", and counts have thousands separators, as
every other count says them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from comsa_migrate.render.status import render_status
from comsa_migrate.sync.status import DaemonStatus, Status


def _daemon(queue_depth: int, oldest_pending_s: float | None, **changes: Any) -> DaemonStatus:
    fields: dict[str, Any] = {
        "id": 1,
        "name": "web1:/srv/comsa/backend/data",
        "data_dir": "/srv/comsa/backend/data",
        "hostname": "web1",
        "pid": 4242,
        "version": "0.2.0",
        "state": "watching",
        "liveness": "running",
        "started_at": datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        "stopped_at": None,
        "heartbeat_age_s": 1.0,
        "last_sync_at": None,
        "last_sync_age_s": None,
        "last_job_id": None,
        "last_action": None,
        "last_lag_ms": None,
        "queue_depth": queue_depth,
        "oldest_pending_s": oldest_pending_s,
        "actions": {},
        "counters": {},
    }
    return DaemonStatus(**(fields | changes))


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


def test_the_jobs_the_counters_and_the_lag_of_the_last_sync_have_thousands_separators() -> None:
    daemon = _daemon(
        0,
        None,
        last_sync_at=datetime(2026, 12, 2, 9, 5, tzinfo=UTC),
        last_sync_age_s=3.0,
        last_job_id="8944653b-2520-4f32-aa3b-230ccbaed31a",
        last_action="insert",
        last_lag_ms=1250,
        actions={"insert": 20000, "unchanged": 1204},
        counters={"errors": 0, "rescans": 1500},
    )

    lines = render_status(Status(True, (daemon,), ()), "postgres@db/comsa").splitlines()

    assert (
        "    jobs        20,000 inserted, 0 updated, 1,204 unchanged, 0 skipped, 0 conflicts"
        in lines
    )
    assert "    counters    errors 0, rescans 1,500" in lines
    assert any(line.endswith("insert, 1,250 ms after its first event") for line in lines)
