"""The summary restore and export print: one shape for both, totals first, then every error."""

from __future__ import annotations

from comsa_migrate.core.tree_summary import FILE_ACTIONS, FileOutcome, TreeSummary
from comsa_migrate.problems import CODES, Severity, printable
from comsa_migrate.render.formatting import counted, field, human_bytes, number, wrap

__all__ = ["dry_run_line", "tree_summary"]

#: each action as a run tells what it did, and as a dry run tells what it would do
_DONE = {
    "written": "written",
    "replaced": "replaced",
    "unchanged": "unchanged",
    "kept": "left alone (different)",
    "failed": "not written",
}
_WOULD = {**_DONE, "written": "to write", "replaced": "to replace"}


def tree_summary(summary: TreeSummary, command: str, source: str) -> str:
    """``command`` is "Restore" or "Export"; ``source`` names the database read."""
    words = _WOULD if summary.dry_run else _DONE
    title = f"{command} into {printable(summary.data_dir)} from {source}"
    lines = [title + (" (dry run: nothing written)" if summary.dry_run else "")]
    lines.append(field("file store", summary.store))
    lines.append(field("jobs", number(summary.jobs)))
    counts = [f"{number(summary.actions[a])} {words[a]}" for a in FILE_ACTIONS]
    lines.append(field("files", ", ".join(counts)))
    if not summary.dry_run:
        lines.append(field("bytes", human_bytes(summary.bytes_written) + " written"))
    lines.append(
        field(
            "warnings",
            ", ".join(f"{c} {number(n)}" for c, n in _warnings(summary)) or "none",
        )
    )
    rate = summary.files / summary.elapsed if summary.elapsed > 0 else 0.0
    lines.append(field("elapsed", f"{summary.elapsed:.2f} s ({rate:,.0f} files/s)"))
    if summary.interrupted:
        lines.append("Interrupted: the files above are in place; rerun to finish the rest.")
    if summary.actions["kept"]:
        n = summary.actions["kept"]
        kept = f"{counted(n, 'file')} {'differs' if n == 1 else 'differ'}"
        left = "was" if n == 1 else "were"
        lines.append(
            f"{kept} from the stored content and {left} left alone; --force replaces them."
        )
    for code, examples in sorted(summary.examples.items()):
        if summary.severity_of(code) is Severity.WARNING:
            lines.append("")
            lines.append(f"{code} ({number(summary.problem_counts[code])}): {CODES[code][1]}")
            lines += [f"  {p.job_id or '-'}  {p.path or '-'}" for p in examples]
    if summary.errors:
        lines.append("")
        lines.append(f"Errors ({number(len(summary.errors))}): these files were not written")
        for problem in sorted(summary.errors, key=lambda p: (p.code, p.path or "")):
            lines.append(f"  {problem.code}  {problem.path or '-'}")
            lines += wrap(problem.message, " " * 6, " " * 6, break_on_hyphens=True)
    return "\n".join(lines)


def dry_run_line(outcome: FileOutcome) -> str | None:
    """What a dry run lists for one file: what would be written or replaced, and why not."""
    if outcome.action in ("written", "replaced"):
        return f"{_WOULD[outcome.action]:<11} {printable(outcome.path, controls=True)}"
    if outcome.action in ("kept", "failed"):
        code = outcome.problem.code if outcome.problem else outcome.action
        return f"{'skip':<11} {printable(outcome.path, controls=True)}  ({code})"
    return None


def _warnings(summary: TreeSummary) -> list[tuple[str, int]]:
    counts = summary.problem_counts
    chosen = [(c, n) for c, n in counts.items() if summary.severity_of(c) is not Severity.ERROR]
    return sorted(chosen, key=lambda item: (-item[1], item[0]))
