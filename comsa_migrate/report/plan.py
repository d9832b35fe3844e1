"""The dry-run report: what the next backfill would do, and what is wrong with the data."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import psycopg

from comsa_migrate.core import tree
from comsa_migrate.core.jsonread import read_job_json
from comsa_migrate.core.layout import JobSource, ScanItem
from comsa_migrate.core.normalise import parse_job
from comsa_migrate.core.plan import Batch, Outcome, Plan
from comsa_migrate.db.faults import set_limits
from comsa_migrate.db.migrations import (
    APP_TABLES,
    pending_functions,
    pending_migrations,
    repeatables,
)
from comsa_migrate.db.plans import insert_plan, plan_batch
from comsa_migrate.db.writes import OWNERLESS_JOBS, owner_of
from comsa_migrate.errors import DatabaseUnavailable, first_line
from comsa_migrate.observer import TABLES, JobResult, Observer, Observers
from comsa_migrate.pipeline.options import BackfillOptions
from comsa_migrate.pipeline.scheduler import run_batches
from comsa_migrate.pipeline.summary import Summary
from comsa_migrate.problems import Problem, Severity, printable
from comsa_migrate.report.drift import DriftInput, check_drift
from comsa_migrate.report.result import (
    CHANGES,
    REPORT_ACTIONS,
    Database,
    FilesSeen,
    JobLine,
    Report,
)

__all__ = ["build_report"]

log = logging.getLogger(__name__)


def build_report(
    conn: psycopg.Connection[Any] | None,
    options: BackfillOptions,
    *,
    target: str | None = None,
    offline_reason: str = "no database configured",
    observers: Iterable[Observer] = (),
    stop: threading.Event | None = None,
) -> Report:
    """Plan the next backfill of ``options.data_dir`` without writing anything.

    With ``conn`` (an idle connection in autocommit mode) every database read runs in
    one READ ONLY, REPEATABLE READ transaction that is rolled back at the end: no
    migration, no run record, no fingerprint. With ``conn`` None only the files are
    validated and the jobs the database would decide are "undecided".
    """
    started = time.monotonic()
    run = _Run(options, Observers(observers))
    if conn is None:
        database = Database("offline", None, (offline_reason,))
        run.plan(None, _Undecided(), stop)
    else:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                set_limits(conn, options.write.limits)
                database = _plan_with_database(conn, run, target, stop)
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = first_line(exc)
            raise DatabaseUnavailable(
                f"{target or 'the database'}: {reason} (the report reads the dashboard's "
                "tables and the schema comsa_migrate)"
            ) from None
    return run.report(database, time.monotonic() - started)


def _plan_with_database(
    conn: psycopg.Connection[Any], run: _Run, target: str | None, stop: threading.Event | None
) -> Database:
    present = [t for t in APP_TABLES if _exists(conn, "SELECT to_regclass(%s)", f"public.{t}")]
    planner_present = _exists(
        conn, "SELECT to_regprocedure(%s)", "comsa_migrate.plan_job(jsonb,boolean)"
    )
    rewrites_present = _exists(
        conn, "SELECT to_regprocedure(%s)", "comsa_migrate.rewrites(jsonb,jsonb,text)"
    )
    pending = tuple(m.file_name for m in pending_migrations(conn))
    if planner_present:  # after a numbered migration, every function file is applied again
        functions = repeatables() if pending else pending_functions(conn)
        pending += tuple(f.name for f in functions)
    notes: list[str] = []
    if pending:
        notes.append("the next backfill first applies " + ", ".join(pending))
    if len(present) < len(APP_TABLES):
        missing = ", ".join(t for t in APP_TABLES if t not in present)
        if present or not any(name.startswith("001_") for name in pending):
            message = f"the database lacks {missing}: the backfill cannot use a partial schema"
            notes.append("jobs are undecided: the schema is incomplete")
            run.on_problem(Problem("schema_missing", message))
            decide: _Decider = _Undecided()
        else:
            # A new, empty database is the normal state before a first migration: not an
            # error, but worth a line in case it is the wrong database.
            notes.append(
                "the database has none of the dashboard's tables yet: the next backfill "
                "creates them and inserts every job"
            )
            decide = _AllInsert()
        run.plan(None, decide, stop)
        return Database("database", target, tuple(notes), pending)
    if not planner_present:
        notes.append(
            "comsa-migrate's bookkeeping is not installed: jobs already in the database "
            "count as conflicts (the backfill may find some unchanged)"
        )
        run.plan(None, _Conservative(conn, run.options.write.force), stop)
        if not run.interrupted:
            check_drift(conn, run.drift_input(), with_state=False)
            if run.options.write.owner is not None:  # none of its jobs was written before
                run.owner_id = owner_of(conn, run.options.write.owner)
                run.count_owned(set())
        return Database("database", target, tuple(notes), pending)
    if not rewrites_present:
        notes.append(
            "this database's functions are older than comsa-migrate's: until the next "
            "backfill replaces them, all the rows of a job it would update are counted"
        )
    run.plan(conn, _Planner(conn, run.options.write.force, rewrites_present), stop)
    if not run.interrupted:
        check_drift(conn, run.drift_input(), with_state=True)
        if run.owner_id is not None:
            ownerless = conn.execute(f"SELECT id::text FROM ({OWNERLESS_JOBS}) o")  # noqa: S608
            run.count_owned({job_id for (job_id,) in ownerless})
    return Database("database", target, tuple(notes), pending)


def _exists(conn: psycopg.Connection[Any], query: str, name: str) -> bool:
    row = conn.execute(query, [name]).fetchone()
    return row is not None and row[0] is not None


class _Run:
    """One report in the making: the scan, the plan and the per-job bookkeeping.

    It observes the backfill's path: the summary's totals, every problem (the report
    lists them all), each job's action, and the observers of the caller.
    """

    def __init__(self, options: BackfillOptions, observer: Observer):
        self.options = options
        self.summary = Summary()
        self.problems: list[Problem] = []
        self.interrupted = False
        self.row_changes: dict[str, Counter[str]] = {t: Counter() for t in TABLES}
        self.actions: dict[str, str] = {}
        self.sources: dict[str, JobSource] = {}
        self.json_on_disk: set[str] = set()
        self.seen = Counter[str]()
        self.decided: set[str] = set()  # jobs whose action the database decided
        self.row_rewritten: set[str] = set()  # jobs whose `jobs` row the plan updates
        self.owner_id: str | None = None  # --owner's user, found in the database
        self.owned = self.owner_only_updates = 0
        self._observer = observer

    def on_problem(self, problem: Problem) -> None:
        self.summary.on_problem(problem)
        self.problems.append(problem)
        self._observer.on_problem(problem)

    def on_job(self, result: JobResult) -> None:
        self.summary.on_job(result)
        self.actions[result.job_id] = result.action
        self._observer.on_job(result)

    def plan(
        self, fingerprints: psycopg.Connection[Any] | None, decide: _Decider, stop: Any
    ) -> None:
        """The backfill's own path, with ``decide`` in place of the write, on one connection."""
        options = self.options
        items = self._watch(tree.scan(options.data_dir, workers=options.scan_processes))
        settings = options.write.settings(fingerprints)
        self.owner_id = settings.owner_id
        self.summary.inputs_stored = settings.store_inputs
        reading = options.write.reading(options.data_dir, settings)
        one = dataclasses.replace(options.write, connections=1)

        def step(conn: psycopg.Connection[Any] | None, batch: Batch) -> list[Outcome]:
            # a report plans without a file store: every payload is a job's
            plans = decide(batch.sources, cast(list[bytes], batch.payloads))
            for source, plan in zip(batch.sources, plans, strict=True):
                for table, (inserted, updated, deleted) in plan.changes.items():
                    self.row_changes[table].update(
                        {"insert": inserted, "update": updated, "delete": deleted}
                    )
                if plan.changes.get("jobs", (0, 0, 0))[1]:
                    self.row_rewritten.add(source.job_id)
            self.decided.update(source.job_id for source in batch.sources)
            return [plan.outcome for plan in plans]

        observer = _ValidatingUnchanged(self)
        self.interrupted = run_batches(fingerprints, one, reading, items, observer, step, stop=stop)

    def count_owned(self, ownerless: set[str]) -> None:
        """What --owner adds: the backfill gives the owner to the jobs it wrote before and
        nobody owns (``ownerless``), at its start, and to each job it inserts."""
        self.owned = len(ownerless) + self.summary.actions["insert"]
        self.owner_only_updates = len(ownerless - self.row_rewritten)
        self.row_changes["jobs"]["update"] += self.owner_only_updates

    def drift_input(self) -> DriftInput:
        return DriftInput(
            self.options.data_dir,
            self.sources,
            self.json_on_disk,
            self.actions,
            self.on_problem,
            self.options.write.path_prefix,
        )

    def report(self, database: Database, elapsed: float) -> Report:
        problems = sorted(self.problems, key=_problem_order)
        codes: dict[str, list[str]] = {}
        for problem in problems:
            if problem.job_id in self.actions and problem.code not in codes.get(problem.job_id, []):
                codes.setdefault(problem.job_id, []).append(problem.code)
        jobs = tuple(
            JobLine(job_id, action, tuple(codes.get(job_id, ())))
            for job_id, action in sorted(self.actions.items())
        )
        return Report(
            data_dir=printable(str(self.options.data_dir)),
            database=database,
            actions={a: self.summary.actions[a] for a in REPORT_ACTIONS},
            rows={t: {c: self.row_changes[t][c] for c in CHANGES} for t in self.summary.tables},
            problems=tuple(problems),
            jobs=jobs,
            files=FilesSeen(
                self.seen["job_jsons"],
                self.seen["json_bytes"],
                self.seen["job_files"],
                self.seen["file_bytes"],
            ),
            generated_at=datetime.now(UTC).replace(microsecond=0),
            elapsed=elapsed,
            interrupted=self.interrupted,
            # counted once every job is planned: an interrupted report says nothing of it
            owner=self.options.write.owner if self.owner_id and not self.interrupted else None,
            owned=self.owned,
            owner_only_updates=self.owner_only_updates,
        )

    def validate(self, source: JobSource) -> None:
        """The problems of a job the backfill would not read: the data as it is now."""
        options = self.options
        raw = read_job_json(options.data_dir, source, options.write.max_json_bytes)
        if isinstance(raw, Problem):
            self.on_problem(raw)
            return
        for problem in parse_job(raw, source, options.data_dir).problems:
            self.on_problem(problem)

    def _watch(self, items: Iterable[ScanItem]) -> Iterator[ScanItem]:
        """Pass the scan through, remembering what the drift check and the totals need."""
        for item in items:
            if isinstance(item, JobSource):
                self.json_on_disk.add(item.job_id)
                self.sources[item.job_id] = item
                self.seen["job_jsons"] += 1
                self.seen["json_bytes"] += item.json_size
                self.seen["job_files"] += len(item.files)
                self.seen["file_bytes"] += sum(f.size for f in item.files)
            elif item.severity is Severity.ERROR and item.job_id is not None:
                self.json_on_disk.add(item.job_id)  # a job JSON the scan could not take
            yield item


def _problem_order(problem: Problem) -> tuple[int, str, str, str]:
    return (-problem.severity, problem.code, problem.job_id or "", problem.path or "")


_Decider = Callable[[list[JobSource], list[bytes]], list[Plan]]


class _ValidatingUnchanged:
    """The run's observer for what is decided without the database.

    A job unchanged by stat is not read by the backfill; the report still validates it,
    so that its problems are those of the data as it is now.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run

    def on_problem(self, problem: Problem) -> None:
        self._run.on_problem(problem)

    def on_job(self, result: JobResult) -> None:
        if result.action == "unchanged" and result.job_id not in self._run.decided:
            self._run.validate(self._run.sources[result.job_id])
        self._run.on_job(result)


class _Planner:
    """The database decides, through comsa_migrate.plan_job(): the backfill's own rule.

    A job with no `jobs` row has nothing stored to compare, and plan_job() says
    `insert` for it without looking further; such jobs are not sent to the server,
    which keeps a report on a fresh database well under the time of the backfill.
    """

    def __init__(self, conn: psycopg.Connection[Any], force: bool, exact: bool) -> None:
        self.conn, self.force, self.exact = conn, force, exact

    def __call__(self, sources: list[JobSource], payloads: list[bytes]) -> list[Plan]:
        existing = _existing(self.conn, sources)
        stored = [p for s, p in zip(sources, payloads, strict=True) if s.job_id in existing]
        planned = iter(
            plan_batch(self.conn, stored, force=self.force, exact=self.exact) if stored else []
        )
        return [
            next(planned) if source.job_id in existing else insert_plan(payload)
            for source, payload in zip(sources, payloads, strict=True)
        ]


class _Undecided:
    """No database to ask: the job is valid, what happens to it is not known."""

    def __call__(self, sources: list[JobSource], payloads: list[bytes]) -> list[Plan]:
        return [Plan("undecided", {}) for _ in payloads]


class _AllInsert:
    """An empty database: the backfill creates the tables and inserts every job."""

    def __call__(self, sources: list[JobSource], payloads: list[bytes]) -> list[Plan]:
        return [insert_plan(payload) for payload in payloads]


class _Conservative:
    """Tables without comsa-migrate's bookkeeping: no row was written by the tool.

    plan_job() is not installed, so a job that already has a row counts as a conflict
    (or an update with --force); the backfill compares the rows and may find it unchanged.
    """

    def __init__(self, conn: psycopg.Connection[Any], force: bool) -> None:
        self.conn, self.force = conn, force

    def __call__(self, sources: list[JobSource], payloads: list[bytes]) -> list[Plan]:
        existing = _existing(self.conn, sources)
        return [
            insert_plan(payload)
            if source.job_id not in existing
            else Plan("update" if self.force else "conflict", {})
            for source, payload in zip(sources, payloads, strict=True)
        ]


def _existing(conn: psycopg.Connection[Any], sources: list[JobSource]) -> set[str]:
    """The ids of these jobs that have a `jobs` row."""
    rows = conn.execute(
        "SELECT id::text FROM public.jobs WHERE id = ANY(%s::uuid[])",
        [[s.job_id for s in sources]],
    ).fetchall()
    return {job_id for (job_id,) in rows}
