"""The sync daemon's parts that need neither a database nor a folder: debouncing, paths,
stats and metrics, and the retries of a JSON that does not parse yet."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.sync.debounce import Debouncer
from comsa_migrate.sync.job_syncer import JobSyncer
from comsa_migrate.sync.metrics import Gauge, StatsCollector
from comsa_migrate.sync.stats import SyncStats
from comsa_migrate.sync.watch import classify, explain_os_error

from .helpers import Clock

JOB = "0a1b2c3d-0000-4000-8000-000000000001"


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

    # wait(None) has no deadline: it runs in a thread, so that a lost wake-up fails here
    waiter = threading.Thread(target=debouncer.wait, args=(None,), name="test-waiter")
    waiter.start()
    try:
        waiter.join(5)
        assert not waiter.is_alive(), "wait(None) after wake() still waits after 5 s"
    finally:
        debouncer.wake()  # frees a waiter that missed the first wake-up
        waiter.join(5)


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
        (f"jobs/{JOB}\n.json", None),  # a UUID and a newline is no job id
        (f"outputs/{JOB}\n/causes.csv", None),
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


def test_metrics_render_the_stats_in_the_prometheus_text_format() -> None:
    clock = Clock()
    clock.now = 1700000000.25
    stats = SyncStats(clock)
    stats.job_synced(JOB, "insert", 600, quiet=False)
    clock.now = 1700000001.0
    stats.job_synced(JOB, "conflict", None, quiet=False)
    stats.rescan("SIGHUP")
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, [Gauge("queue_depth", "Jobs waiting.", lambda: 3)]))

    text = generate_latest(registry).decode()

    assert "# TYPE comsa_migrate_sync_jobs_total counter\n" in text
    assert 'comsa_migrate_sync_jobs_total{action="insert"} 1.0\n' in text
    assert "comsa_migrate_sync_conflicts_total 1.0\n" in text
    assert 'comsa_migrate_sync_rescans_total{reason="SIGHUP"} 1.0\n' in text
    assert "# TYPE comsa_migrate_sync_queue_depth gauge\n" in text
    assert "comsa_migrate_sync_queue_depth 3.0\n" in text
    assert "comsa_migrate_sync_last_sync_timestamp_seconds 1.700000001e+09\n" in text
    assert "comsa_migrate_sync_last_lag_seconds 0.6\n" in text
    assert "_created" not in text


def test_stats_tell_the_heartbeat_and_the_stop_the_same_counts() -> None:
    stats = SyncStats(Clock())
    stats.job_synced(JOB, "insert", 40, quiet=False)
    stats.job_synced(JOB, "unchanged", None, quiet=True)
    stats.error()
    stats.held_back()
    stats.count("outages")
    stats.rescan("start-up")

    snap = stats.snapshot()

    counters = {
        "errors": 1,
        "json_removed": 0,
        "observer_restarts": 0,
        "outages": 1,
        "rescans": 1,
    }
    assert snap.counters == counters
    assert snap.totals() == {"actions": {"insert": 1, "unchanged": 1}, **counters}
    assert snap.flat() == {"insert": 1, "unchanged": 1, **counters, "held_back": 1}
    assert snap.last is not None and (snap.last.action, snap.last.lag_ms) == ("insert", 40)


def test_stats_read_from_another_thread_never_see_half_an_update() -> None:
    stats = SyncStats()
    done = threading.Event()

    def bump() -> None:
        for _ in range(20_000):
            stats.rescan("periodic")
        done.set()

    thread = threading.Thread(target=bump)
    thread.start()
    while not done.is_set():
        snap = stats.snapshot()
        assert snap.counters["rescans"] == snap.rescans.get("periodic", 0)
    thread.join()

    assert stats.snapshot().counters["rescans"] == 20_000


def test_a_json_that_does_not_parse_is_retried_with_backoff_until_its_grace_ends() -> None:
    clock = Clock()
    retries: list[float] = []
    stats = SyncStats()
    syncer = JobSyncer(
        Path("data"),
        WriteOptions(),
        unparsable_grace=1.0,
        stats=stats,
        retry=lambda job_id, delay: retries.append(round(delay, 3)),
        clock=clock,
    )

    while syncer.hold_back(JOB):
        clock.now += retries[-1]

    assert retries == [0.05, 0.1, 0.2, 0.4, 0.25]  # the last one: what remains of 1 s
    assert stats.snapshot().held_back == 5
    assert syncer.hold_back(JOB)  # a new failure of the same job starts again
    assert retries[-1] == 0.05
