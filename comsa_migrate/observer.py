"""What a migration tells, and to whom: each problem and each job's action, to an Observer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from comsa_migrate.problems import Problem

__all__ = ["ACTIONS", "TABLES", "JobResult", "Observer", "Observers"]

#: what can happen to a job, in the order summaries list them
ACTIONS = ("insert", "update", "unchanged", "skip", "conflict", "metadata_only")
#: the dashboard's tables a job's rows go to, in the order summaries list them
TABLES = ("jobs", "job_logs", "job_files", "job_input_files")


@dataclass(frozen=True, slots=True)
class JobResult:
    """One job's fate: its action and the rows written (by table) for it."""

    job_id: str
    action: str
    rows: dict[str, int]


class Observer(Protocol):
    """Told what a migration finds, in the order one writer alone would tell it.

    ``on_problem`` once per problem: of the tree, of a job's data, or the database's
    refusal of a job. ``on_job`` once per job with its action (one of ACTIONS), after
    the job's problems. Both are called on the thread that runs the migration, so an
    observer needs no lock of its own. The backfill, the report and the sync daemon
    all observe the same path through this protocol; a progress bar is one too.
    """

    def on_problem(self, problem: Problem) -> None: ...

    def on_job(self, result: JobResult) -> None: ...


class Observers:
    """Several observers told the same things, in the order given."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self._observers = tuple(observers)

    def on_problem(self, problem: Problem) -> None:
        for observer in self._observers:
            observer.on_problem(problem)

    def on_job(self, result: JobResult) -> None:
        for observer in self._observers:
            observer.on_job(result)
