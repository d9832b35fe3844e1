"""The report command: acceptance on the sample, formats, exit codes, offline mode, output."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest

from comsa_migrate.backfill import BackfillOptions
from comsa_migrate.problems import CODES
from comsa_migrate.render.report import render_text
from comsa_migrate.report.plan import build_report
from comsa_migrate.report.result import REPORT_ACTIONS

from .conftest import database_name, dsn_for
from .helpers import write_job

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "report-schema.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _json(result: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _tree_with_unmapped_fields(data_dir: Path, n: int) -> None:
    for i in range(n):
        write_job(data_dir, f"00000000-0000-4000-8000-{i:012d}", legacy_flag=True)


# -- acceptance on the sample --------------------------------------------------------------


def test_sample_against_an_empty_database_plans_11_inserts_and_rows_11_89_16(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    result = cli("report", sample_tree, "--dsn", dsn, "--format", "json")

    assert result.exit_code == 0, result.output
    summary = _json(result)["summary"]
    assert summary["jobs"]["by_action"]["insert"] == 11
    assert sum(summary["jobs"]["by_action"].values()) == 11
    assert {t: summary["rows"][t]["insert"] for t in summary["rows"]} == {
        "jobs": 11,
        "job_logs": 89,
        "job_files": 16,
    }
    by_code = summary["problems"]["by_code"]
    assert by_code["missing_input_file"] == 2
    assert by_code["orphan_output_dir"] == 1
    assert by_code["invalid_job_dir"] == 1
    assert summary["problems"]["by_severity"]["error"] == 0


def test_text_report_of_the_sample_puts_the_summary_first_and_the_plan_in_it(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    result = cli("report", sample_tree, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Dry-run report: what the next backfill would do (nothing was written)"
    assert "  result      OK: no errors; 4 warnings, 9 info" in lines
    assert "  jobs        11 insert, 0 update, 0 unchanged, 0 conflict, 0 skip" in lines
    assert "              job_logs         89        0        0" in lines
    assert lines.index("Summary") < lines.index("Warnings (4)") < lines.index("Info (9)")
    assert result.stderr == ""


def test_report_after_the_backfill_shows_every_job_unchanged(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)

    result = cli("report", sample_tree, "--dsn", dsn, "--format", "json")

    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["summary"]["jobs"]["by_action"]["unchanged"] == 11
    assert {job["action"] for job in report["jobs"]} == {"unchanged"}
    assert all(n == 0 for rows in report["summary"]["rows"].values() for n in rows.values())


def test_problems_of_jobs_unchanged_by_stat_are_still_reported(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    cli("backfill", sample_tree, "--dsn", dsn)

    result = cli("report", sample_tree, "--dsn", dsn, "--format", "json")

    assert _json(result)["summary"]["problems"]["by_code"]["missing_input_file"] == 2


# -- formats ----------------------------------------------------------------------------------


def test_json_report_validates_against_the_documented_schema(
    cli: Any, dsn: str, quirks_tree: Path
) -> None:
    schema = json.loads(SCHEMA.read_text())
    online = _json(cli("report", quirks_tree, "--dsn", dsn, "--format", "json"))
    offline = _json(cli("report", quirks_tree, "--offline", "--format", "json"))

    for document in (online, offline):
        jsonschema.validate(document, schema, format_checker=jsonschema.FormatChecker())
    assert online["version"] == 1
    assert online["database"]["mode"] == "database"
    assert offline["database"]["mode"] == "offline"


def test_documented_schema_names_every_problem_code_and_action() -> None:
    schema = json.loads(SCHEMA.read_text())

    assert set(schema["$defs"]["code"]["enum"]) == set(CODES)
    assert tuple(schema["$defs"]["action"]["enum"]) == REPORT_ACTIONS


def test_json_report_lists_each_job_with_its_action_and_problem_codes(
    cli: Any, dsn: str, quirks_tree: Path
) -> None:
    report = _json(cli("report", quirks_tree, "--dsn", dsn, "--format", "json"))

    jobs = {job["id"]: job for job in report["jobs"]}
    assert jobs["0a1b2c3d-0000-4000-8000-000000000003"] == {
        "id": "0a1b2c3d-0000-4000-8000-000000000003",
        "action": "skip",
        "problems": ["invalid_json"],
    }
    assert jobs["0a1b2c3d-0000-4000-8000-000000000004"]["action"] == "metadata_only"
    assert jobs["0a1b2c3d-0000-4000-8000-000000000008"]["action"] == "insert"
    severities = [p["severity"] for p in report["problems"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert report["summary"]["problems"]["total"] == len(report["problems"])


def test_markdown_report_has_a_heading_summary_tables_and_problem_lists(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    result = cli("report", sample_tree, "--dsn", dsn, "--format", "markdown")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("## comsa-migrate dry-run report\n")
    assert "| insert | 11 |" in text
    assert "| `job_logs` | 89 | 0 | 0 |" in text
    assert "### Warnings" in text
    assert "- **`missing_input_file`** (2): `input_file` names a file that is not on disk" in text
    assert "  - `outputs/test-001`: job folder whose name is not a UUID" in text
    assert "an outputs/\\<id\\> folder" in text  # not swallowed as an HTML tag


def test_text_report_fits_80_columns(cli: Any, dsn: str, quirks_tree: Path) -> None:
    deep = quirks_tree / "outputs" / "0a1b2c3d-0000-4000-8000-000000000008" / ("x" * 60)
    deep.mkdir(parents=True)
    (deep / ("y" * 60 + ".csv")).write_text("a\n")
    (deep / ("z" * 60 + ".csv")).symlink_to(deep / ("y" * 60 + ".csv"))

    result = cli("report", quirks_tree, "--dsn", dsn, "--all")

    assert "symlink_skipped (2)" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_text_report_keeps_a_long_database_name_whole_on_its_line(
    cli: Any, databases: Any, template_db: str, sample_tree: Path
) -> None:
    name = database_name("long").ljust(63, "x")  # the longest name PostgreSQL keeps
    with psycopg.connect(databases.admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        result = cli("report", sample_tree, "--dsn", dsn_for(databases.admin_dsn, name))
    finally:
        databases.drop(name)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"{'':14}{name}" in lines
    assert lines[lines.index(f"{'':14}{name}") - 1].endswith("/")
    assert max(len(line) for line in lines) <= 80


def test_text_report_aligns_the_job_input_files_row_with_the_others(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    assert cli("init-db", "--dsn", dsn, "--input-files").exit_code == 0

    result = cli("report", sample_tree, "--dsn", dsn)

    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  rows "))
    rows = lines[start : start + 5]
    assert [line.split()[-4] for line in rows[1:]] == [
        "jobs",
        "job_logs",
        "job_files",
        "job_input_files",
    ]
    assert rows[0].split() == ["rows", "insert", "update", "delete"]
    # every column ends where its heading does
    assert len({len(line) for line in rows}) == 1, "\n".join(rows)
    ends = [m.end() for m in re.finditer(r"\S+", rows[0])][1:]
    for line in rows[1:]:
        assert [m.end() for m in re.finditer(r"\S+", line)][1:] == ends, "\n".join(rows)


def test_text_report_lists_10_examples_per_code_then_how_many_more(
    cli: Any, tmp_path: Path
) -> None:
    _tree_with_unmapped_fields(tmp_path, 13)

    result = cli("report", tmp_path, "--offline")

    assert "unmapped_fields (13): fields with no column were not stored" in result.stdout
    assert result.stdout.count("not stored: legacy_flag") == 10
    assert "    … and 3 more (--all lists them)" in result.stdout.splitlines()


def test_all_lists_every_problem_in_text_and_markdown(cli: Any, tmp_path: Path) -> None:
    _tree_with_unmapped_fields(tmp_path, 13)

    text = cli("report", tmp_path, "--offline", "--all").stdout
    markdown = cli("report", tmp_path, "--offline", "--all", "--format", "markdown").stdout

    assert text.count("not stored: legacy_flag") == 13
    assert markdown.count("not stored: legacy_flag") == 13
    assert "more" not in text
    assert "more" not in markdown


def test_colour_is_used_only_when_asked_for_a_terminal(tmp_path: Path) -> None:
    _tree_with_unmapped_fields(tmp_path, 1)
    report = build_report(None, BackfillOptions(tmp_path))

    coloured = render_text(report, color=True)
    plain = render_text(report, color=False)

    assert ANSI.search(coloured)
    assert not ANSI.search(plain)
    assert ANSI.sub("", coloured) == plain


def test_cli_writes_no_colour_when_stdout_is_not_a_terminal(cli: Any, quirks_tree: Path) -> None:
    result = cli("report", quirks_tree, "--offline")

    assert "\x1b[" not in result.stdout


def test_output_writes_the_report_to_a_file_and_nothing_to_stdout(
    cli: Any, dsn: str, sample_tree: Path, tmp_path: Path
) -> None:
    target = tmp_path / "report.md"

    result = cli("report", sample_tree, "--dsn", dsn, "--format", "markdown", "--output", target)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert target.read_text().startswith("## comsa-migrate dry-run report")


def test_an_unwritable_output_file_is_one_line_and_exit_2(
    cli: Any, sample_tree: Path, tmp_path: Path
) -> None:
    result = cli("report", sample_tree, "--offline", "--output", tmp_path / "no" / "such.txt")

    assert result.exit_code == 2
    assert result.stderr.startswith("comsa-migrate: error: cannot write ")
    assert len(result.stderr.splitlines()) == 1


# -- offline ------------------------------------------------------------------------------------


def test_without_a_database_the_files_alone_are_validated_and_no_server_is_started(
    cli: Any, sample_tree: Path, tmp_path: Path
) -> None:
    home = tmp_path / "embedded-home"

    result = cli("report", sample_tree, env={"COMSA_MIGRATE_HOME": str(home)})

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "Dry-run report, offline (no database configured): only the files were validated"
    )
    assert "11 valid (a database decides their action), 0 skip" in result.stdout
    assert not home.exists()


def test_offline_ignores_a_configured_database(cli: Any, sample_tree: Path) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"

    result = cli("report", sample_tree, "--offline", "--dsn", unreachable, "--format", "json")

    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["database"] == {
        "mode": "offline",
        "target": None,
        "read_only": True,
        "notes": ["--offline"],
        "pending_migrations": [],
    }
    assert report["summary"]["jobs"]["by_action"]["undecided"] == 11


def test_offline_markdown_says_offline_before_anything_else(cli: Any, sample_tree: Path) -> None:
    lines = cli("report", sample_tree, "--offline", "--format", "markdown").stdout.splitlines()

    assert lines[2].endswith(", offline (--offline): only the files were validated.")


# -- exit codes ---------------------------------------------------------------------------------


def test_exit_code_is_1_when_there_is_an_error_level_problem(
    cli: Any, dsn: str, quirks_tree: Path
) -> None:
    assert cli("report", quirks_tree, "--dsn", dsn).exit_code == 1
    assert cli("report", quirks_tree, "--offline").exit_code == 1


def test_exit_code_is_0_with_warnings_and_1_with_fail_on_warning(
    cli: Any, dsn: str, sample_tree: Path
) -> None:
    assert cli("report", sample_tree, "--dsn", dsn).exit_code == 0
    assert cli("report", sample_tree, "--dsn", dsn, "--fail-on", "warning").exit_code == 1


def test_fail_on_warning_passes_a_tree_with_info_only(cli: Any, tmp_path: Path) -> None:
    _tree_with_unmapped_fields(tmp_path, 2)

    assert cli("report", tmp_path, "--offline", "--fail-on", "warning").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "yaml"),
        ("--fail-on", "info"),
        ("--no-such-option",),
    ],
)
def test_usage_errors_exit_2(cli: Any, sample_tree: Path, args: tuple[str, ...]) -> None:
    assert cli("report", sample_tree, *args).exit_code == 2


def test_a_missing_data_dir_is_one_line_and_exit_2(cli: Any, tmp_path: Path) -> None:
    result = cli("report", tmp_path / "nowhere", "--offline")

    assert result.exit_code == 2
    assert result.stderr == f"comsa-migrate: error: {tmp_path / 'nowhere'}: no such folder\n"


def test_an_unreachable_database_is_one_line_and_exit_2(cli: Any, sample_tree: Path) -> None:
    result = cli("report", sample_tree, "--dsn", "postgresql://u:s3cret@127.0.0.1:1/db")

    assert result.exit_code == 2
    assert result.stderr.startswith("comsa-migrate: error: cannot connect to u@127.0.0.1:1/db")
    assert "s3cret" not in result.stderr
    assert result.stdout == ""


# -- backfill --dry-run -------------------------------------------------------------------------


def test_backfill_dry_run_prints_the_report_and_writes_nothing(
    cli: Any, dsn: str, sample_tree: Path, conn: psycopg.Connection[Any]
) -> None:
    dry = cli("backfill", sample_tree, "--dsn", dsn, "--dry-run")
    report = cli("report", sample_tree, "--dsn", dsn)

    assert dry.exit_code == 0, dry.output
    assert dry.stdout == report.stdout
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM comsa_migrate.runs").fetchone() == (0,)


def test_backfill_dry_run_with_errors_exits_1_like_the_report(
    cli: Any, dsn: str, quirks_tree: Path
) -> None:
    assert cli("backfill", quirks_tree, "--dsn", dsn, "--dry-run").exit_code == 1


def test_backfill_dry_run_without_a_database_does_not_start_the_embedded_server(
    cli: Any, sample_tree: Path, tmp_path: Path
) -> None:
    home = tmp_path / "embedded-home"

    result = cli("backfill", sample_tree, "--dry-run", env={"COMSA_MIGRATE_HOME": str(home)})

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Dry-run report, offline (no database configured)")
    assert not home.exists()


# -- docs/report.md shows real reports ------------------------------------------------------------


def _docs_block(opening: str, first_line: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "report.md").read_text()
    start = text.index(f"{opening}\n{first_line}") + len(opening) + 1
    return text[start : text.index(f"\n{opening[:3]}", start) + 1]


def _as_in_docs(output: str, fixture: str) -> str:
    """The report as docs/report.md shows it: the fixture's relative path, the page's server."""
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    output = output.replace(str(fixtures / fixture / "data"), f"fixtures/{fixture}/data")
    shown = "postgres@127.0.0.1:5432/comsa_dashboard"
    output = re.sub(
        r"(?s)  database    .*?\(read only\)", f"  database    {shown} (read only)", output
    )
    return re.sub(r"against `[^`]*`", f"against `{shown}`", output)


def test_the_report_page_shows_the_real_text_report_of_the_sample(cli: Any, dsn: str) -> None:
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    result = cli("report", fixtures / "legacy-sample" / "data", "--dsn", dsn)

    shown = _docs_block("```text", "Dry-run report: what the next backfill would do")
    assert _as_in_docs(result.stdout, "legacy-sample") == shown


def test_the_report_page_shows_the_real_markdown_report_of_the_quirks(cli: Any, dsn: str) -> None:
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    result = cli("report", fixtures / "quirks" / "data", "--dsn", dsn, "--format", "markdown")

    shown = _docs_block("````markdown", "## comsa-migrate dry-run report")
    mtime = re.compile(r"used the file's mtime [0-9-]+ [0-9:.]+")  # the checkout's own
    actual = _as_in_docs(result.stdout, "quirks")
    assert mtime.sub("used the file's mtime …", actual) == mtime.sub(
        "used the file's mtime …", shown
    )


def test_a_stop_request_ends_the_report_early_and_marks_it_interrupted(tmp_path: Path) -> None:
    _tree_with_unmapped_fields(tmp_path, 3)
    stop = threading.Event()
    stop.set()

    report = build_report(None, BackfillOptions(tmp_path), stop=stop)

    assert report.interrupted
    assert report.jobs == ()
    assert "  interrupted the report covers the jobs read before Ctrl-C" in render_text(report)
