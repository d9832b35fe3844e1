"""Plain-text renderings of run results, for the CLI and the daemon's log."""

from __future__ import annotations

from collections import Counter

from comsa_migrate.core.summary import Summary
from comsa_migrate.problems import CODES, Severity, printable
from comsa_migrate.render.words import actions_done, counted, field, number, wrap

__all__ = ["REPORT_FORMATS", "backfill_summary"]

#: the formats of `comsa-migrate report` (render/report.py writes them)
REPORT_FORMATS = ("text", "json", "markdown")


def backfill_summary(summary: Summary, data_dir: str, target: str) -> str:
    """The summary a backfill prints: totals first, then every error-level problem."""
    lines = [f"Backfill of {printable(data_dir)} into {target}"]
    if summary.migrations and (summary.migrations.applied or summary.migrations.adopted):
        done = [*summary.migrations.applied]
        done += [f"{name} (adopted existing tables)" for name in summary.migrations.adopted]
        lines.append(field("migrations", "applied " + ", ".join(done)))
    if summary.migrations and summary.migrations.functions:
        count = len(summary.migrations.functions)
        lines.append(field("functions", f"applied {count} file{'s' if count != 1 else ''}"))
    jobs = actions_done(summary.actions)
    if summary.actions["metadata_only"]:
        jobs += f"; {number(summary.actions['metadata_only'])} metadata only"
    lines.append(field("jobs", jobs))
    rows = ", ".join(f"{t} {number(summary.rows[t])}" for t in summary.tables)
    lines.append(field("rows", rows))
    if summary.file_store:
        recorded = counted(summary.rows["stored_files"], "file")
        lines.append(field("files", f"{recorded} recorded; contents kept in {summary.file_store}"))
    if summary.owner:
        given = summary.rows["owned"]
        lines.append(field("owner", f"{counted(given, 'job')} given {summary.owner}"))
    for severity, label in ((Severity.WARNING, "warnings"), (Severity.INFO, "info")):
        counts = _by_severity(summary.problem_counts, severity)
        lines.append(field(label, ", ".join(f"{c} {number(n)}" for c, n in counts) or "none"))
    rate = summary.jobs / summary.elapsed if summary.elapsed > 0 else 0.0
    lines.append(field("elapsed", f"{summary.elapsed:.2f} s ({rate:,.0f} jobs/s)"))
    if summary.stopped:
        lines.append(
            "Stopped part-way: the jobs above were written (the batch in flight may have "
            "been too); rerun to finish the rest."
        )
    elif summary.interrupted:
        lines.append("Interrupted: the jobs above were written; rerun to finish the rest.")
    if summary.errors:
        lines.append("")
        lines.append(f"Errors ({number(len(summary.errors))}): these jobs were not written")
        for problem in sorted(summary.errors, key=lambda p: (p.code, p.job_id or "", p.path or "")):
            lines.append(f"  {problem.code}  {problem.job_id or '-'}")
            lines.append(f"      {problem.path or '-'}")
            lines += wrap(problem.message, " " * 6, " " * 6, break_on_hyphens=True)
    return "\n".join(lines)


def _by_severity(counts: Counter[str], severity: Severity) -> list[tuple[str, int]]:
    chosen = [(code, n) for code, n in counts.items() if CODES[code][0] is severity]
    return sorted(chosen, key=lambda item: (-item[1], item[0]))
