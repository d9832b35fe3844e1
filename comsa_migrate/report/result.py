"""The report as data: what the next backfill would do, and what is wrong with the data."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from comsa_migrate.observer import ACTIONS
from comsa_migrate.problems import CODES, Problem, Severity

__all__ = [
    "CHANGES",
    "REPORT_ACTIONS",
    "REPORT_VERSION",
    "Database",
    "FilesSeen",
    "JobLine",
    "Report",
    "StoreCheck",
    "StoredFinding",
]

#: the version of the report's JSON shape (docs/report-schema.json)
REPORT_VERSION = 1
#: a job's action in the report: the backfill's, plus "undecided" when no database answers
REPORT_ACTIONS = (*ACTIONS, "undecided")
CHANGES = ("insert", "update", "delete")


@dataclass(frozen=True, slots=True)
class Database:
    """Where the actions came from: a database (read only) or none."""

    mode: str  # "database" or "offline"
    target: str | None  # the redacted DSN
    notes: tuple[str, ...] = ()  # why offline, what is missing, what the backfill applies first
    pending_migrations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobLine:
    """One job JSON on disk: what the next backfill would do with it, and its problem codes."""

    id: str
    action: str
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FilesSeen:
    job_jsons: int = 0
    json_bytes: int = 0
    job_files: int = 0
    file_bytes: int = 0

    @property
    def files(self) -> int:
        return self.job_jsons + self.job_files

    @property
    def bytes(self) -> int:
        return self.json_bytes + self.file_bytes


#: what the store check finds of one stored file: problem codes (problems.CODES), those
#: that restore and export meet on the same contents first
STORE_FINDINGS = (
    "stored_content_missing",
    "stored_content_corrupt",
    "changed_since_stored",
    "removed_since_stored",
)


@dataclass(frozen=True, slots=True)
class StoredFinding:
    kind: str  # one of STORE_FINDINGS
    job_id: str
    path: str  # relative to DATA_DIR
    sha256: str

    @property
    def severity(self) -> Severity:
        return CODES[self.kind][0]


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """The file store (--file-store) checked against stored_files and the disk."""

    url: str
    contents: int  # contents the store holds...
    bytes: int  # ...and their size
    files: int  # stored_files rows
    not_on_disk: int  # rows of files removed from disk, their last content kept
    unnamed: int  # contents no row names (what `gc` would delete)...
    unnamed_bytes: int  # ...and their size
    verified: int  # contents read back whole and hashed
    findings: tuple[StoredFinding, ...] = ()

    @property
    def counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.findings)


@dataclass(frozen=True, slots=True)
class Report:
    """The whole answer: totals, one line per job, and every problem (most severe first)."""

    data_dir: str
    database: Database
    actions: dict[str, int]
    rows: dict[str, dict[str, int]]  # table -> insert / update / delete
    problems: tuple[Problem, ...]
    jobs: tuple[JobLine, ...]
    files: FilesSeen
    generated_at: datetime
    elapsed: float = 0.0
    interrupted: bool = False
    file_store: StoreCheck | None = None  # with --file-store
    owner: str | None = None  # --owner: the dashboard user given the jobs nobody owns
    owned: int = 0  # jobs the backfill would give the owner, as its summary counts them
    #: rows of `jobs` (among rows' updates) updated only to give them the owner
    owner_only_updates: int = 0

    @property
    def offline(self) -> bool:
        return self.database.mode == "offline"

    @property
    def problem_counts(self) -> Counter[str]:
        return Counter(p.code for p in self.problems)

    @property
    def severity_counts(self) -> dict[Severity, int]:
        counts = Counter(p.severity for p in self.problems)
        counts.update(f.severity for f in self._store_findings)
        return {severity: counts[severity] for severity in sorted(Severity, reverse=True)}

    @property
    def rows_written(self) -> dict[str, int]:
        """Rows per table the backfill would write, counted as its summary counts them."""
        written = {t: self.rows[t]["insert"] + self.rows[t]["update"] for t in self.rows}
        if "jobs" in written:  # the summary counts those as jobs given the owner
            written["jobs"] -= self.owner_only_updates
        return written

    def fails(self, fail_on: Severity = Severity.ERROR) -> bool:
        """True when some problem is at least as severe as ``fail_on``."""
        return any(p.severity >= fail_on for p in self.problems) or any(
            f.severity >= fail_on for f in self._store_findings
        )

    @property
    def _store_findings(self) -> tuple[StoredFinding, ...]:
        return self.file_store.findings if self.file_store else ()
