"""The sync daemon's parts that need neither a database nor a folder: debouncing, paths, metrics."""

from __future__ import annotations

import errno

import pytest

from comsa_migrate.sync.debounce import Debouncer
from comsa_migrate.sync.metrics import Metrics
from comsa_migrate.sync.watch import classify, explain_os_error

JOB = "0a1b2c3d-0000-4000-8000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_events_of_one_job_push_its_deadline_back_and_make_one_entry() -> None:
    clock = Clock()
    debouncer = Debouncer(0.5, max_delay=5.0, clock=clock)
    debouncer.add(JOB)
    clock.now += 0.4
    debouncer.add(JOB)
    clock.now += 0.4

    assert debouncer.pop_due(10) == []
    clock.now += 0.1
    assert debouncer.pop_due(10) == [(JOB, 100.0)]
    assert len(debouncer) == 0


def test_a_job_written_without_pause_is_due_after_max_delay() -> None:
    clock = Clock()
    debouncer = Debouncer(0.5, max_delay=2.0, clock=clock)
    for _ in range(10):
        debouncer.add(JOB)
        clock.now += 0.3

    assert debouncer.pop_due(10) == [(JOB, 100.0)]


def test_due_jobs_come_out_earliest_first_and_at_most_limit_at_a_time() -> None:
    clock = Clock()
    debouncer = Debouncer(0.5, max_delay=5.0, clock=clock)
    for n in range(5):
        debouncer.add(f"job-{n}", delay=1.0 - n * 0.1)
    clock.now += 1.0

    assert [job for job, _ in debouncer.pop_due(3)] == ["job-4", "job-3", "job-2"]
    assert [job for job, _ in debouncer.pop_due(3)] == ["job-1", "job-0"]


def test_wait_returns_when_woken() -> None:
    debouncer = Debouncer(0.5, max_delay=5.0)
    debouncer.wake()

    debouncer.wait(None)  # returns at once: the wake-up was not lost


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (f"jobs/{JOB}.json", ("json", JOB)),
        (f"jobs/{JOB.upper()}.JSON", ("json", JOB)),
        (f"jobs/.{JOB}.json.tmp", None),
        ("jobs/notes.txt", None),
        (f"uploads/{JOB}", ("files", JOB)),
        (f"outputs/{JOB}/plots/2025/csmf.png", ("files", JOB)),
        (f"outputs/{JOB}/.hidden/csmf.png", None),
        (f"outputs/{JOB}/causes.csv~", None),
        ("outputs/test-001/causes.csv", None),
        ("jobs", ("top", None)),
        ("", ("top", None)),
        ("demo_configs.json", None),
    ],
)
def test_each_path_maps_to_its_job(relative: str, expected: tuple[str, str] | None) -> None:
    root = "/srv/data"
    path = f"{root}/{relative}" if relative else root

    target = classify(root, path)

    assert (None if target is None else (target.kind, target.job_id)) == expected


def test_no_watches_left_names_the_kernel_limit() -> None:
    reason = explain_os_error(OSError(errno.ENOSPC, "inotify watch limit reached"))

    assert "fs.inotify.max_user_watches" in reason


def test_metrics_render_in_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.job_synced("insert", 1700000000.25, 0.6)
    metrics.job_synced("conflict", 1700000001.0, None)
    metrics.gauge("queue_depth", "Jobs waiting.", lambda: 3)

    text = metrics.render()

    assert 'comsa_migrate_sync_jobs_total{action="insert"} 1\n' in text
    assert "comsa_migrate_sync_conflicts_total 1\n" in text
    assert "# TYPE comsa_migrate_sync_queue_depth gauge\ncomsa_migrate_sync_queue_depth 3\n" in text
    assert "comsa_migrate_sync_last_sync_timestamp_seconds 1700000001.000\n" in text
