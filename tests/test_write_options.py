"""WriteOptions is the one place of a write option: the backfill, the report and the sync
daemon each take it from there, so one edit reaches all three."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import psycopg

from comsa_migrate import BackfillOptions, SyncOptions, WriteOptions, backfill, build_report

from .helpers import running_daemon, wait_until

JOBS = 11  # the job JSONs of fixtures/legacy-sample


def test_a_write_option_reaches_the_backfill_the_report_and_the_daemon(
    dsn: str, sample_tree: Path
) -> None:
    write = WriteOptions(max_json_bytes=10)  # every job JSON of the sample is larger

    with psycopg.connect(dsn, autocommit=True) as conn:
        summary = backfill(conn, BackfillOptions(sample_tree, write))
        report = build_report(conn, BackfillOptions(sample_tree, write))
    with running_daemon(dsn, sample_tree, ready=False, max_json_bytes=10) as daemon:
        wait_until(daemon.ready.is_set, 30, "the daemon to catch up")
        synced = daemon.stats()

    assert summary.problem_counts["file_too_large"] == JOBS
    assert sum(p.code == "file_too_large" for p in report.problems) == JOBS
    assert synced["errors"] == JOBS and synced.get("insert", 0) == 0


def test_the_uses_options_carry_write_options_and_repeat_none_of_its_fields() -> None:
    write_fields = {f.name for f in fields(WriteOptions)}
    for options in (BackfillOptions, SyncOptions):
        own = {f.name: f.type for f in fields(options)}
        assert own["write"] in (WriteOptions, "WriteOptions")
        assert not write_fields & own.keys(), options.__name__
