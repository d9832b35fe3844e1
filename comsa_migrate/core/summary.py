"""What a migration tells: each problem and each job's action, to observers such as Summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from comsa_migrate.core import store
from comsa_migrate.db.migrations import MigrationResult
from comsa_migrate.problems import Problem, Severity

__all__ = ["ACTIONS", "JobResult", "Observer", "Observers", "Summary"]

#: what can happen to a job, in the order summaries list them
ACTIONS = ("insert", "update", "unchanged", "skip", "conflict", "metadata_only")
EXAMPLES_PER_CODE = 10


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


@dataclass
class Summary:
    """Totals of one run; error-level problems are kept whole, others as counts and examples."""

    actions: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    problem_counts: Counter[str] = field(default_factory=Counter)
    errors: list[Problem] = field(default_factory=list)
    examples: dict[str, list[Problem]] = field(default_factory=dict)
    migrations: MigrationResult | None = None
    elapsed: float = 0.0
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped part-way, if it did
    inputs_stored: bool = False  # uploads are copied into job_input_files
    owner: str | None = None  # --owner, the e-mail of the owner given to jobs without one
    file_store: str | None = None  # --file-store, where the files' contents are kept

    @property
    def jobs(self) -> int:
        return sum(self.actions[a] for a in ACTIONS if a != "metadata_only")

    @property
    def ok(self) -> bool:
        # an error of no job: a folder of the tree that could not be listed
        unlisted = any(p.job_id is None for p in self.errors)
        return self.actions["skip"] == 0 and self.actions["conflict"] == 0 and not unlisted

    def on_problem(self, problem: Problem) -> None:
        self.problem_counts[problem.code] += 1
        if problem.severity is Severity.ERROR:
            self.errors.append(problem)
        else:
            examples = self.examples.setdefault(problem.code, [])
            if len(examples) < EXAMPLES_PER_CODE:
                examples.append(problem)

    def on_job(self, result: JobResult) -> None:
        self.actions[result.action] += 1
        if result.rows:  # none for an unchanged job, the most common
            self.rows.update(result.rows)

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables whose rows this run counts: job_input_files when uploads go there."""
        return store.TABLES if self.inputs_stored else store.TABLES[:3]

    def totals(self) -> dict[str, Any]:
        return {
            "actions": dict(self.actions),
            "rows": dict(self.rows),
            "problems": dict(self.problem_counts),
            "elapsed_s": round(self.elapsed, 3),
        }
