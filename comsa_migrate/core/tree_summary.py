"""What writing a legacy tree tells: each file's fate, and the totals of a restore or an export."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from comsa_migrate.problems import CODES, Problem, Severity

__all__ = ["FILE_ACTIONS", "FileOutcome", "TreeSummary"]

#: what can happen to one file, in the order summaries list them: written where there was
#: none; replaced (a different file, with --force); unchanged (the same bytes were there);
#: kept (a different file, left alone); failed (not written: its problem says why)
FILE_ACTIONS = ("written", "replaced", "unchanged", "kept", "failed")
EXAMPLES_PER_CODE = 10


class FileOutcome(NamedTuple):
    """One file's fate. With a dry run, written and replaced say what would be done."""

    path: str  # relative to DATA_DIR
    job_id: str | None
    action: str  # one of FILE_ACTIONS
    size: int
    problem: Problem | None = None  # why it failed or was kept
    notes: tuple[Problem, ...] = ()  # what else was found on the way (a warning)


@dataclass
class TreeSummary:
    """Totals of one restore or export; error-level problems kept whole, others as examples."""

    data_dir: str
    store: str  # the file store's URL, without credentials
    dry_run: bool = False
    actions: Counter[str] = field(default_factory=Counter)
    bytes_written: int = 0
    jobs: int = 0  # jobs whose files were looked at
    problem_counts: Counter[str] = field(default_factory=Counter)
    errors: list[Problem] = field(default_factory=list)
    examples: dict[str, list[Problem]] = field(default_factory=dict)
    elapsed: float = 0.0
    interrupted: bool = False
    #: error codes told as warnings in this run (restore --missing-ok): their files are not
    #: written, yet the run is ok
    tolerated: frozenset[str] = frozenset()
    tolerated_files: int = 0  # files not written for a tolerated problem

    @property
    def files(self) -> int:
        return sum(self.actions.values())

    @property
    def ok(self) -> bool:
        """Every file is in place: written, replaced or unchanged, and no error."""
        failed = self.actions["failed"] - self.tolerated_files
        return not self.errors and not self.actions["kept"] and not failed

    def severity_of(self, code: str) -> Severity:
        """The code's severity in this run: a tolerated error is a warning."""
        return Severity.WARNING if code in self.tolerated else CODES[code][0]

    def on_file(self, outcome: FileOutcome) -> None:
        self.actions[outcome.action] += 1
        if outcome.action in ("written", "replaced") and not self.dry_run:
            self.bytes_written += outcome.size
        if outcome.problem is not None:
            if outcome.action == "failed" and outcome.problem.code in self.tolerated:
                self.tolerated_files += 1
            self.on_problem(outcome.problem)
        for note in outcome.notes:
            self.on_problem(note)

    def on_problem(self, problem: Problem) -> None:
        self.problem_counts[problem.code] += 1
        if self.severity_of(problem.code) is Severity.ERROR:
            self.errors.append(problem)
        else:
            examples = self.examples.setdefault(problem.code, [])
            if len(examples) < EXAMPLES_PER_CODE:
                examples.append(problem)

    def totals(self) -> dict[str, Any]:
        return {
            "files": dict(self.actions),
            "jobs": self.jobs,
            "bytes_written": self.bytes_written,
            "problems": dict(self.problem_counts),
            "elapsed_s": round(self.elapsed, 3),
        }
