"""The benchmark's own code on a tiny tree: the generator, the baselines and the runner.

No timing is asserted here; performance is measured by ``python -m bench.run``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bench import run, servers, split
from bench.baselines import bare_walk, copy_lower_bound
from bench.generate import TreeShape, generate

from .helpers import stored_contents, table_counts

ROOT = Path(__file__).resolve().parent.parent
JOBS = 20


@pytest.fixture
def bench_tree(tmp_path: Path) -> Path:
    return generate(tmp_path / "bench" / "data", TreeShape(jobs=JOBS, seed=7))


def _digest(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(data_dir)} {path.stat().st_mtime_ns}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_the_same_seed_generates_the_same_tree_names_bytes_and_mtimes(tmp_path: Path) -> None:
    first = generate(tmp_path / "one" / "data", TreeShape(jobs=5, seed=3))
    second = generate(tmp_path / "two" / "data", TreeShape(jobs=5, seed=3))
    other = generate(tmp_path / "three" / "data", TreeShape(jobs=5, seed=4))

    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)


def test_generated_jobs_are_shaped_like_the_legacy_sample(bench_tree: Path) -> None:
    docs = [orjson.loads(p.read_bytes()) for p in (bench_tree / "jobs").iterdir()]

    assert len(docs) == JOBS
    assert {d["type"] for d in docs} <= {"pipeline", "vacalibration", "openva"}
    for doc in docs:
        if doc["status"] == "failed":
            assert isinstance(doc["error"], str) and doc["result"] == {}
        else:
            assert 8 <= len(doc["log"]) <= 12
            outputs = list((bench_tree / "outputs" / doc["id"]).iterdir())
            assert 2 <= len(outputs) <= 3
        if "input_file" in doc:
            assert (bench_tree / "uploads" / doc["id"] / "input.csv").is_file()


def test_generated_tree_backfills_every_job_then_reruns_unchanged(
    cli: Any, dsn: str, conn: psycopg.Connection[Any], bench_tree: Path
) -> None:
    first = cli("backfill", bench_tree, "--dsn", dsn)
    second = cli("backfill", bench_tree, "--dsn", dsn)

    assert first.exit_code == 0, first.output
    assert f"{JOBS} inserted, 0 updated, 0 unchanged, 0 skipped" in first.stdout
    assert table_counts(conn) == run._tree_counts(bench_tree)
    assert second.exit_code == 0, second.output
    assert f"0 inserted, 0 updated, {JOBS} unchanged" in second.stdout


def test_copy_lower_bound_writes_exactly_the_rows_of_the_backfill(
    cli: Any, dsn: str, conn: psycopg.Connection[Any], bench_tree: Path
) -> None:
    assert cli("backfill", bench_tree, "--dsn", dsn).exit_code == 0
    backfilled = stored_contents(conn)
    conn.execute("TRUNCATE public.jobs, public.job_logs, public.job_files")

    counts = copy_lower_bound(str(bench_tree), dsn)

    assert counts == table_counts(conn)
    assert stored_contents(conn) == backfilled


def test_bare_walk_stats_every_file_of_the_tree(bench_tree: Path) -> None:
    files = sum(1 for p in bench_tree.rglob("*") if p.is_file())

    assert bare_walk(str(bench_tree)) == {"files": files}


def test_peak_wrapper_runs_the_module_and_writes_its_peak_rss(
    tmp_path: Path, bench_tree: Path
) -> None:
    peak_file = tmp_path / "peak"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.peak",
            str(peak_file),
            "bench.baselines",
            "walk",
            str(bench_tree),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )

    assert (
        orjson.loads(completed.stdout)["files"]
        == run._tree_counts(bench_tree)["jobs"] + (run._tree_counts(bench_tree)["job_files"])
    )
    assert int(peak_file.read_text()) > 1000  # KiB: any Python process holds more


@pytest.mark.slow
def test_runner_measures_all_four_prints_both_ratios_and_drops_its_databases(
    admin_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    created: list[str] = []
    name = servers.database_name
    monkeypatch.setattr(servers, "database_name", lambda: created.append(name()) or created[-1])

    status = run.main(["--jobs", str(JOBS), "--dsn", admin_dsn, "--tree", str(tmp_path / "t")])

    out = capsys.readouterr().out
    assert status == 0
    for letter in "abcd":
        assert run.MEASURES[letter] in out
    assert "b/a = " in out and "c/d = " in out
    assert "peak RSS of (b) = " in out
    assert len(created) == 2
    with psycopg.connect(admin_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", [created])
        assert left.fetchone() == (0,)


@pytest.mark.slow
def test_split_reports_wall_client_and_server_time_for_each_measure(
    admin_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = split.main(["--jobs", str(JOBS), "--dsn", admin_dsn, "--tree", str(tmp_path / "t")])

    out = capsys.readouterr().out
    assert status == 0
    for label in ("(a) COPY", "(b) cold", "(c) rerun", "(n) no lock"):
        assert label in out


@pytest.mark.slow
def test_split_with_writers_counts_every_backend_and_shows_the_spread(
    admin_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--jobs", str(JOBS), "--dsn", admin_dsn, "--tree", str(tmp_path / "t")]
    status = split.main([*args, "--writers", "2", "--batch-size", "5"])

    out = capsys.readouterr().out.splitlines()
    assert status == 0
    cold = out.index(next(line for line in out if line.startswith("(b) cold")))
    spread = out[cold + 1].split("writers ")[1].split(", ")
    assert len(spread) == 2  # both writers wrote a batch of their own
    server_total = float(out[cold].split()[4])
    main = float(out[cold + 1].split("main connection ")[1].split(",")[0])
    assert server_total == pytest.approx(main + sum(float(s) for s in spread), abs=0.02)


@pytest.mark.slow
def test_the_report_benchmark_measures_every_step_on_a_tiny_tree(
    admin_dsn: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.report_bench", "--jobs", "20", "--dsn", admin_dsn]
        + ["--tree", str(tmp_path / "tree"), "--json", str(results)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr.decode()
    measured = json.loads(results.read_text())
    assert set(measured["median"]) == {"b", "r", "c", "w", "o", "p"}
    assert all(seconds > 0 for seconds in measured["median"].values())
