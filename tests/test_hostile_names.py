"""File names that are not UTF-8, anywhere in the tree: skipped with a warning, shown escaped,
and never the end of a backfill, a report or the daemon."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from comsa_migrate.cli.logs import TEXT_FORMAT, JsonFormatter
from comsa_migrate.problems import Problem, printable

from .helpers import (
    age_tree,
    job_row,
    new_job_id,
    running_daemon,
    wait_until,
    write_job,
    write_job_atomically,
)

JOB = "0a1b2c3d-0000-4000-8000-00000000abcd"

# watchdog warns, from its own thread, when it adds again the watch of a folder made with
# its parents (mkdir -p) in one go; harmless, and the daemon's CLI silences it too
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

#: (where, as bytes relative to DATA_DIR, what it is) of each name that is not UTF-8
HOSTILE = [
    (b"caf\xe9.txt", "file"),
    (b"old\xff", "folder"),
    (b"jobs/\xff\xfe.json", "file"),
    (b"jobs/notes\xfe.txt", "file"),
    (b"jobs/sub\xff", "folder"),
    (b"uploads/\xfe" + JOB.encode(), "folder"),
    (b"outputs/\xff\xfe", "folder"),
    (b"uploads/" + JOB.encode() + b"/input\xff.csv", "file"),
    (b"outputs/" + JOB.encode() + b"/caf\xe9.csv", "file"),
    (b"outputs/" + JOB.encode() + b"/plots/\xfe.png", "file"),
    (b"outputs/" + JOB.encode() + b"/run\xff/causes.csv", "file"),
]
#: what each of them is reported as, in that order, with the escaped path
EXPECTED = [
    ("stray_file", "caf\\xe9.txt"),
    ("stray_file", "old\\xff"),
    ("invalid_job_dir", "jobs/\\xff\\xfe.json"),
    ("stray_file", "jobs/notes\\xfe.txt"),
    ("stray_file", "jobs/sub\\xff"),
    ("invalid_job_dir", f"uploads/\\xfe{JOB}"),
    ("invalid_job_dir", "outputs/\\xff\\xfe"),
    ("invalid_file_name", f"uploads/{JOB}/input\\xff.csv"),
    ("invalid_file_name", f"outputs/{JOB}/caf\\xe9.csv"),
    ("invalid_file_name", f"outputs/{JOB}/plots/\\xfe.png"),
    ("invalid_file_name", f"outputs/{JOB}/run\\xff"),
]
#: the job's files whose names are UTF-8: these are mirrored
MIRRORED = [
    f"outputs/{JOB}/causes.csv",
    f"outputs/{JOB}/plots/csmf.png",
    f"uploads/{JOB}/input.csv",
    f"uploads/{JOB}/résumé.csv",
]


def make_hostile(data: Path) -> None:
    """The names of HOSTILE under ``data``, next to a job with files of good names."""
    write_job(data, JOB, input_file=f"data/uploads/{JOB}/input.csv")
    for rel in MIRRORED:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("cause,n\nMalaria,3\n")
    root = os.fsencode(data)
    for rel, kind in HOSTILE:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "folder":
            os.mkdir(path)
            with open(os.path.join(path, b"inside.csv"), "wb") as fh:
                fh.write(b"x\n")
        else:
            with open(path, "wb") as fh:
                fh.write(b"{}" if rel.endswith(b".json") else b"x\n")
    age_tree(data)


@pytest.fixture
def hostile_data(tmp_path: Path) -> Path:
    """An empty tree with make_hostile() names in it."""
    root = tmp_path / "data"
    for folder in ("jobs", "uploads", "outputs"):
        (root / folder).mkdir(parents=True)
    make_hostile(root)
    return root


def test_printable_escapes_undecodable_bytes_lone_surrogates_and_nul_only() -> None:
    assert printable(os.fsdecode(b"caf\xe9 \xff.csv")) == "caf\\xe9 \\xff.csv"
    assert printable("a\ud800b\x00c") == "a\\ud800b\\x00c"
    assert printable("résumé\t✓") == "résumé\t✓"


def test_every_problem_can_be_encoded_as_utf8_whatever_it_was_given() -> None:
    problem = Problem("stray_file", "not \udcff here", path=os.fsdecode(b"x\xfe"))

    assert (problem.path, problem.message) == ("x\\xfe", "not \\xff here")
    problem.path.encode("utf-8")  # type: ignore[union-attr]


def test_backfill_skips_each_such_name_with_a_warning_and_writes_the_job(
    cli: Any, dsn: str, hostile_data: Path, conn: psycopg.Connection[Any]
) -> None:
    result = cli("backfill", hostile_data, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "invalid_file_name 4" in " ".join(result.stdout.split())
    files = conn.execute("SELECT file_name FROM job_files WHERE job_id = %s", [JOB]).fetchall()
    assert sorted(name for (name,) in files) == sorted(p.rsplit("/", 1)[1] for p in MIRRORED)
    outcome = conn.execute("SELECT outcome FROM comsa_migrate.runs").fetchone()
    assert outcome == ("ok",)
    rerun = cli("backfill", hostile_data, "--dsn", dsn)
    assert rerun.exit_code == 0, rerun.output
    assert "0 inserted, 0 updated, 1 unchanged" in " ".join(rerun.stdout.split())


def test_the_json_report_lists_every_such_name_escaped(
    cli: Any, dsn: str, hostile_data: Path
) -> None:
    result = cli("report", hostile_data, "--dsn", dsn, "--format", "json")

    assert result.exit_code == 0, result.output
    problems = json.loads(result.stdout)["problems"]
    assert sorted((p["code"], p["path"]) for p in problems) == sorted(EXPECTED)
    assert {p["job_id"] for p in problems if p["code"] == "invalid_file_name"} == {JOB}


def test_a_uuid_and_a_newline_names_no_job_for_the_backfill_nor_the_report(
    cli: Any, dsn: str, tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    data = tmp_path / "data"
    write_job(data, JOB)
    other = new_job_id()
    (data / "jobs" / f"{other}\n.json").write_text('{"type": "openva", "status": "completed"}')
    (data / "outputs" / f"{other}\n").mkdir(parents=True)
    age_tree(data)
    shown = [
        ("invalid_job_dir", f"jobs/{other}\\x0a.json"),
        ("invalid_job_dir", f"outputs/{other}\\x0a"),
    ]

    report = cli("report", data, "--dsn", dsn, "--format", "json")
    backfill = cli("backfill", data, "--dsn", dsn)

    assert report.exit_code == 0, report.output
    problems = json.loads(report.stdout)["problems"]
    assert sorted((p["code"], p["path"]) for p in problems) == shown
    assert backfill.exit_code == 0, backfill.output  # warnings only: no db_error
    assert "1 inserted" in " ".join(backfill.stdout.split())
    assert conn.execute("SELECT id::text FROM jobs").fetchall() == [(JOB,)]


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_the_text_and_markdown_reports_show_every_such_name_escaped(
    cli: Any, dsn: str, hostile_data: Path, fmt: str
) -> None:
    result = cli("report", hostile_data, "--dsn", dsn, "--format", fmt, "--all")

    assert result.exit_code == 0, result.output
    for _, path in EXPECTED:
        assert path in result.stdout, path


def test_the_offline_report_to_a_file_shows_them_too(
    cli: Any, hostile_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.md"

    result = cli("report", hostile_data, "--offline", "--format", "markdown", "--output", out)

    assert result.exit_code == 0, result.output
    assert f"`outputs/{JOB}/caf\\xe9.csv`" in out.read_text(encoding="utf-8")


def test_a_data_dir_whose_own_path_is_not_utf8_is_shown_escaped(cli: Any, tmp_path: Path) -> None:
    base = os.path.join(os.fsencode(tmp_path), b"d\xe9p\xf4t")
    os.makedirs(os.path.join(base, b"jobs"))
    write_job(Path(os.fsdecode(base)), JOB)

    for fmt in ("text", "json", "markdown"):
        result = cli("report", os.fsdecode(base), "--offline", "--format", fmt)
        assert result.exit_code == 0, result.output
        unwrapped = re.sub(r"\n +", "", result.stdout).replace("\\\\", "\\")
        assert "d\\xe9p\\xf4t" in unwrapped


# -- the daemon ------------------------------------------------------------------------------


def test_the_daemon_starts_on_such_names_stores_them_escaped_and_still_syncs_a_new_job(
    dsn: str, hostile_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comsa_migrate")
    new = new_job_id()
    with running_daemon(dsn, hostile_data) as daemon:
        assert job_row(dsn, JOB) is not None
        write_job_atomically(hostile_data, new)
        late = os.path.join(os.fsencode(hostile_data), b"outputs", new.encode())
        os.makedirs(late, exist_ok=True)
        with open(os.path.join(late, b"\xfflate.csv"), "wb") as fh:
            fh.write(b"x\n")

        wait_until(lambda: job_row(dsn, new), what="the new job's row")
        wait_until(
            lambda: stored_problems(dsn).get(f"outputs/{new}/\\xfflate.csv"),
            what="the late name's problem",
        )
        assert daemon.stats()["errors"] == 0

    stored = stored_problems(dsn)
    for code, path in EXPECTED:
        if code != "stray_file":  # info is not stored
            assert stored.get(path) == code, path
    for record in caplog.records:  # every log line can be written, as text and as JSON
        orjson.loads(JsonFormatter().format(record))
        logging.Formatter(TEXT_FORMAT).format(record).encode("utf-8")
    assert any("\\xff\\xfe" in r.getMessage() for r in caplog.records)


def stored_problems(dsn: str) -> dict[str, str]:
    """path -> code of the daemon's stored problems."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT path, code FROM comsa_migrate.daemon_problems").fetchall()
    return {path: code for path, code in rows if path is not None}


# -- text no UTF-8 holds, inside a job JSON ------------------------------------------------

LONE_SURROGATE, NUL = b'"\\ud800"', b'"a\\u0000b"'


@pytest.mark.parametrize("value", [LONE_SURROGATE, NUL], ids=["lone-surrogate", "nul"])
def test_an_unmapped_field_holding_it_is_accepted_and_the_job_written(
    cli: Any, dsn: str, tmp_path: Path, conn: psycopg.Connection[Any], value: bytes
) -> None:
    data = tmp_path / "data"
    path = write_job(data, JOB, demo_id="x", **{"notes": {"deep": ["x"]}})
    path.write_bytes(path.read_bytes().replace(b'"x"', value))

    result = cli("backfill", data, "--dsn", dsn)
    report = cli("report", data, "--dsn", dsn, "--format", "json")

    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["summary"]["problems"]["by_code"] == {"unmapped_fields": 1}


@pytest.mark.parametrize("value", [LONE_SURROGATE, NUL], ids=["lone-surrogate", "nul"])
@pytest.mark.parametrize("field", ["country", "result", "log"])
def test_a_stored_field_holding_it_is_invalid_field(
    cli: Any, dsn: str, tmp_path: Path, value: bytes, field: str
) -> None:
    data = tmp_path / "data"
    path = write_job(data, JOB, **{field: "x" if field != "result" else {"k": "x"}})
    path.write_bytes(path.read_bytes().replace(b'"x"', value, 1))

    result = cli("backfill", data, "--dsn", dsn)

    assert result.exit_code == 1, result.output
    assert "invalid_field" in result.stdout and field in result.stdout
    assert "0 inserted" in result.stdout


def test_an_unmapped_key_holding_it_is_shown_escaped(cli: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write_job(data, JOB, x=1)
    path.write_bytes(path.read_bytes().replace(b'"x"', b'"k\\udcff\\u0000"'))

    result = cli("report", data, "--offline", "--format", "json")

    assert result.exit_code == 0, result.output
    [problem] = json.loads(result.stdout)["problems"]
    assert problem["message"] == "not stored: k\\xff\\x00"
