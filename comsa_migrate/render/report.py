"""The dry-run report as text (80 columns), Markdown or JSON: functions that return strings."""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson

from comsa_migrate.problems import CODES, Problem, Severity
from comsa_migrate.render.formatting import (
    WIDTH,
    counted,
    field,
    human_bytes,
    number,
    planned,
    wrap,
)
from comsa_migrate.render.store_check import store_json, store_markdown, store_text
from comsa_migrate.render.summary import REPORT_FORMATS
from comsa_migrate.report.result import CHANGES, REPORT_VERSION, Report
from comsa_migrate.version import __version__

__all__ = ["FORMATS", "render", "render_json", "render_markdown", "render_text"]

FORMATS = REPORT_FORMATS
EXAMPLES = 10

#: the actions in the order the report counts them; the last two only when some job has them
_SHOWN_ACTIONS = ("insert", "update", "unchanged", "conflict", "skip", "metadata_only", "undecided")
_SEVERITY_TITLES = {Severity.ERROR: "Errors", Severity.WARNING: "Warnings", Severity.INFO: "Info"}
_COLOURS = {Severity.ERROR: "31;1", Severity.WARNING: "33", Severity.INFO: "36"}


def render(report: Report, fmt: str, *, color: bool = False, show_all: bool = False) -> str:
    """The report in ``fmt`` (one of FORMATS), ending with a newline."""
    if fmt == "json":
        return render_json(report)
    if fmt == "markdown":
        return render_markdown(report, show_all=show_all)
    return render_text(report, color=color, show_all=show_all)


# -- text ---------------------------------------------------------------------------------


def render_text(report: Report, *, color: bool = False, show_all: bool = False) -> str:
    """Summary first, then problems grouped by code, most severe first; 80 columns."""

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    lines = [_first_line(report)]
    lines.append(field("data", report.data_dir))
    if not report.offline:
        lines += _database_text(report)
    lines += [field("note", note) for note in report.database.notes[1 if report.offline else 0 :]]
    verdict = _verdict(report)
    lines.append(field("result", verdict).replace(verdict, paint(verdict, _verdict_colour(report))))
    if report.interrupted:
        lines.append(field("interrupted", "the report covers the jobs read before Ctrl-C"))
    lines += ["", "Summary"]
    lines.append(field("jobs", _actions_text(report)))
    lines += _rows_text(report)
    if report.owner is not None:
        lines.append(field("owner", _owner_text(report)))
    lines.append(field("problems", _severities_text(report)))
    lines.append(field("files", _files_text(report)))
    lines += store_text(report.file_store, show_all=show_all) if report.file_store else []
    for severity, group in _groups(report.problems):
        count = sum(len(problems) for _, problems in group)
        heading = f"{_SEVERITY_TITLES[severity]} ({number(count)})"
        lines += ["", paint(heading, _COLOURS[severity])]
        for code, problems in group:
            title = wrap(f"{code} ({number(len(problems))}): {CODES[code][1]}", "  ", "      ")
            title[0] = title[0].replace(code, paint(code, _COLOURS[severity]), 1)
            lines += title
            shown = problems if show_all else problems[:EXAMPLES]
            for problem in shown:
                lines += _problem_text(problem)
            if len(shown) < len(problems):
                more = number(len(problems) - len(shown))
                lines.append(f"    … and {more} more (--all lists them)")
    return "\n".join(lines) + "\n"


def _first_line(report: Report) -> str:
    if report.offline:
        return f"Dry-run report, offline ({_offline_reason(report)}): only the files were validated"
    return "Dry-run report: what the next backfill would do (nothing was written)"


def _database_text(report: Report) -> list[str]:
    """The database field: the target cut only between its parts, "(read only)" whole."""
    lines = wrap(report.database.target or "", f"  {'database':<11} ", " " * 14)
    if len(lines[-1]) + len(" (read only)") <= WIDTH:
        lines[-1] += " (read only)"
    else:
        lines.append(f"{'':14}(read only)")
    return lines


def _offline_reason(report: Report) -> str:
    return report.database.notes[0] if report.database.notes else "no database"


def _verdict_colour(report: Report) -> str:
    return "31;1" if report.fails() else "32;1"


def _verdict(report: Report) -> str:
    counts = report.severity_counts
    errors = counts[Severity.ERROR]
    rest = f"{counted(counts[Severity.WARNING], 'warning')}, {number(counts[Severity.INFO])} info"
    if errors:
        return f"FAIL: {counted(errors, 'error')}, {rest}"
    return f"OK: no errors; {rest}"


def _actions_text(report: Report) -> str:
    actions = report.actions
    shown = [f"{number(actions[action])} {planned(action)}" for action in _shown_actions(report)]
    if report.offline:
        shown = [f"{number(actions['undecided'])} valid (a database decides their action)"]
        shown.append(f"{number(actions['skip'])} skip")
        if actions["metadata_only"]:
            shown.append(f"{number(actions['metadata_only'])} metadata only")
    return ", ".join(shown)


def _rows_text(report: Report) -> list[str]:
    if report.offline:
        return [field("rows", "need a database")]
    # a column as wide as its longest entry and a space, at least 10 for the names and 9
    # for the counts: the three tables the backfill writes keep their usual layout, and
    # job_input_files or a count of millions widen their column instead of pushing it
    name_width = max([10, *(len(table) + 1 for table in report.rows)])
    widths = {
        change: max([9, *(len(f"{counts[change]:,}") + 1 for counts in report.rows.values())])
        for change in CHANGES
    }
    header = "".join(f"{change:>{widths[change]}}" for change in CHANGES)
    lines = [f"  {'rows':<11} {'':<{name_width}}{header}"]
    for table, counts in report.rows.items():
        cells = "".join(f"{counts[change]:>{widths[change]},}" for change in CHANGES)
        lines.append(f"{'':14}{table:<{name_width}}{cells}")
    return lines


def _owner_text(report: Report) -> str:
    return f"{counted(report.owned, 'job')} would be given {report.owner}"


def _severities_text(report: Report) -> str:
    counts = report.severity_counts
    return (
        f"{counted(counts[Severity.ERROR], 'error')}, "
        f"{counted(counts[Severity.WARNING], 'warning')}, {number(counts[Severity.INFO])} info"
    )


def _files_text(report: Report) -> str:
    seen = report.files
    return (
        f"{counted(seen.job_jsons, 'job JSON')} and {counted(seen.job_files, 'job file')}: "
        f"{seen.bytes:,} bytes ({human_bytes(seen.bytes)})"
    )


def _problem_text(problem: Problem) -> list[str]:
    where = problem.path or problem.job_id or "-"
    lines = wrap(where, "    - ", "      ")
    if problem.job_id and problem.job_id not in where:
        lines.append(f"      job {problem.job_id}")
    return lines + wrap(problem.message, "      ", "      ")


# -- markdown -----------------------------------------------------------------------------


def render_markdown(report: Report, *, show_all: bool = False) -> str:
    """A heading, the summary as tables and the problems as lists, for an issue or a PR."""
    where = f"`{report.data_dir}`"
    if report.offline:
        reason = _md(_offline_reason(report))
        intro = f"Data {where}, offline ({reason}): only the files were validated."
    else:
        intro = f"Data {where} against `{report.database.target}` (read only: nothing written)."
    lines = ["## comsa-migrate dry-run report", "", intro, "", f"**{_verdict(report)}**"]
    notes = report.database.notes[1 if report.offline else 0 :]
    if notes:
        lines.append("")
        lines += [f"- {_md(note)}" for note in notes]
    lines += ["", "| jobs | count |", "|---|---:|"]
    lines += [
        f"| {planned(action)} | {report.actions[action]:,} |" for action in _shown_actions(report)
    ]
    if not report.offline:
        lines += ["", "| rows | insert | update | delete |", "|---|---:|---:|---:|"]
        for table in report.rows:
            counts = " | ".join(f"{report.rows[table][c]:,}" for c in CHANGES)
            lines.append(f"| `{table}` | {counts} |")
    if report.owner is not None:
        lines += ["", f"Owner: {_md(_owner_text(report))}."]
    severities = report.severity_counts
    lines += ["", "| problems and files | count |", "|---|---:|"]
    lines += [f"| {s}s | {severities[s]:,} |" for s in (Severity.ERROR, Severity.WARNING)]
    lines.append(f"| info | {severities[Severity.INFO]:,} |")
    lines.append(f"| job JSONs | {report.files.job_jsons:,} |")
    lines.append(f"| job files | {report.files.job_files:,} |")
    lines.append(f"| bytes | {report.files.bytes:,} |")
    lines += store_markdown(report.file_store) if report.file_store else []
    for severity, group in _groups(report.problems):
        lines += ["", f"### {_SEVERITY_TITLES[severity]}"]
        for code, problems in group:
            lines += ["", f"- **`{code}`** ({number(len(problems))}): {_md(CODES[code][1])}"]
            shown = problems if show_all else problems[:EXAMPLES]
            lines += [f"  - {_md_problem(problem)}" for problem in shown]
            if len(shown) < len(problems):
                lines.append(f"  - … and {number(len(problems) - len(shown))} more")
    return "\n".join(lines) + "\n"


def _md_problem(problem: Problem) -> str:
    parts = [_code_span(problem.path)] if problem.path else []
    if problem.job_id and not (problem.path and problem.job_id in problem.path):
        parts.append(f"job {_code_span(problem.job_id)}")
    return f"{' '.join(parts) or '-'}: {_md(problem.message)}"


_MD_SPECIAL = re.compile(r"([\\`*<>|])")


def _md(text: str) -> str:
    """Text safe in Markdown; `code` spans in it stay code spans."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: nothing is code
        return _MD_SPECIAL.sub(r"\\\1", text)
    return "".join(
        _code_span(part) if i % 2 else _MD_SPECIAL.sub(r"\\\1", part)
        for i, part in enumerate(parts)
    )


def _code_span(text: str) -> str:
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# -- json ---------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """One object, the shape of docs/report-schema.json (version 1): every job, every problem."""
    counts = report.severity_counts
    document = {
        "version": REPORT_VERSION,
        "tool": f"comsa-migrate {__version__}",
        "generated_at": report.generated_at.isoformat().replace("+00:00", "Z"),
        "data_dir": report.data_dir,
        "database": {
            "mode": report.database.mode,
            "target": report.database.target,
            "read_only": True,
            "notes": list(report.database.notes),
            "pending_migrations": list(report.database.pending_migrations),
        },
        "summary": {
            "ok": not report.fails(),
            "interrupted": report.interrupted,
            "jobs": {"total": len(report.jobs), "by_action": report.actions},
            "rows": report.rows,
            "owner": None
            if report.owner is None
            else {"email": report.owner, "jobs": report.owned},
            "problems": {
                "total": len(report.problems),
                "by_severity": {str(s): n for s, n in counts.items()},
                "by_code": dict(sorted(report.problem_counts.items())),
            },
            "files": {
                "job_jsons": report.files.job_jsons,
                "job_files": report.files.job_files,
                "files": report.files.files,
                "bytes": report.files.bytes,
            },
            "elapsed_s": round(report.elapsed, 3),
        },
        "file_store": store_json(report.file_store),
        "jobs": [
            {"id": job.id, "action": job.action, "problems": list(job.problems)}
            for job in report.jobs
        ],
        "problems": [
            {
                "code": p.code,
                "severity": str(p.severity),
                "job_id": p.job_id,
                "path": p.path,
                "message": p.message,
            }
            for p in report.problems
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


# -- shared -------------------------------------------------------------------------------


def _groups(
    problems: tuple[Problem, ...],
) -> Iterator[tuple[Severity, list[tuple[str, list[Problem]]]]]:
    """Problems by severity (most severe first), then by code (most frequent first)."""
    by_code: dict[str, list[Problem]] = {}
    for problem in problems:
        by_code.setdefault(problem.code, []).append(problem)
    for severity in sorted(Severity, reverse=True):
        group = [(code, ps) for code, ps in by_code.items() if CODES[code][0] is severity]
        if group:
            yield severity, sorted(group, key=lambda item: (-len(item[1]), item[0]))


def _shown_actions(report: Report) -> list[str]:
    return [
        action
        for action in _SHOWN_ACTIONS
        if report.actions[action] or action not in ("metadata_only", "undecided")
    ]
