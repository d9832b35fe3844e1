"""Every count people read has thousands separators, in every command's text and the
daemon's log; JSON keeps plain numbers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from .helpers import jobs_written, make_empty_tree, running_daemon, wait_until, write_job

JOBS = 1001  # each with 10 log lines and a field that has no column (an info problem)
#: a number of four digits or more, but not one of a time, a version, a port or a name
BARE = re.compile(r"(?<![\w.:@/-])\d{4,}(?![\w.:-])")


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_empty_tree(tmp_path_factory.mktemp("counts"))
    for i in range(JOBS):
        write_job(data, f"00000000-0000-4000-8000-{i:012d}", legacy_flag=True)
    return data


def test_the_backfill_summary_writes_every_count_with_separators(
    cli: Any, dsn: str, big_tree: Path
) -> None:
    result = cli("backfill", big_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "  jobs        1,001 inserted, 0 updated, 0 unchanged, 0 skipped, 0 conflicts" in out
    assert "  rows        jobs 1,001, job_logs 10,010, job_files 0" in out
    assert "  info        unmapped_fields 1,001" in out
    assert BARE.findall(out) == [], out


def test_the_text_report_writes_every_count_with_separators(
    cli: Any, dsn: str, big_tree: Path
) -> None:
    result = cli("report", big_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "  jobs        1,001 insert, 0 update, 0 unchanged, 0 conflict, 0 skip" in lines
    assert "              jobs          1,001        0        0" in lines
    assert "              job_logs     10,010        0        0" in lines
    assert "  files       1,001 job JSONs and 0 job files: 691,691 bytes (675.5 KiB)" in lines
    assert "  result      OK: no errors; 0 warnings, 1,001 info" in lines
    assert "Info (1,001)" in lines
    assert "  unmapped_fields (1,001): fields with no column were not stored" in lines
    assert "    … and 991 more (--all lists them)" in lines
    assert BARE.findall(result.stdout) == [], result.stdout


def test_the_markdown_report_writes_every_count_with_separators(
    cli: Any, dsn: str, big_tree: Path
) -> None:
    result = cli("report", big_tree, "--dsn", dsn, "--format", "markdown")

    assert "| insert | 1,001 |" in result.stdout
    assert "- **`unmapped_fields`** (1,001): fields with no column were not stored" in result.stdout
    assert BARE.findall(result.stdout) == [], result.stdout


def test_the_json_report_keeps_plain_numbers(cli: Any, dsn: str, big_tree: Path) -> None:
    result = cli("report", big_tree, "--dsn", dsn, "--format", "json")

    summary = json.loads(result.stdout)["summary"]
    assert summary["jobs"]["total"] == 1001
    assert summary["jobs"]["by_action"]["insert"] == 1001
    assert summary["rows"]["job_logs"]["insert"] == 10010
    assert '"total": 1001' in result.stdout


def test_the_daemons_rescan_line_writes_its_counts_with_separators(
    dsn: str, big_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "comsa_migrate"), running_daemon(dsn, big_tree):
        pass

    assert "rescan (start-up): 1,001 jobs, 1,001 inserted, 0 updated," in caplog.text


def test_a_rescan_stopped_part_way_says_so_beside_its_counts(
    dsn: str, big_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped during its catch-up, the daemon logs the jobs it did, not as the whole tree."""
    with (
        caplog.at_level(logging.INFO, "comsa_migrate"),
        running_daemon(dsn, big_tree, ready=False, batch_size=20),
    ):
        wait_until(lambda: jobs_written(dsn) > 0, what="the catch-up to write a batch")

    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("rescan ("))
    assert line.startswith("rescan (start-up) stopped part-way: ")
    assert not line.startswith("rescan (start-up) stopped part-way: 1,001 jobs")
