"""The legacy backend over an export serves what it served over the original tree, and what
the database-backed dashboard served of the jobs it created (tests/legacy_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result

from bench.generate import TreeShape, generate
from comsa_migrate.cli import main
from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.legacy_form import legacy_time
from comsa_migrate.core.normalise import parse_job
from comsa_migrate.db.migrations import create_input_files_table

from .legacy_backend import LegacyBackend
from .tree_store_helpers import insert_as_dashboard, sidecar_bytes, store_file


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def served(backend: LegacyBackend, downloads: dict[str, list[str]]) -> dict[str, Any]:
    """Every endpoint's answer for every job, and every download asked of it."""
    answers: dict[str, Any] = {"GET /jobs": backend.jobs()}
    for job_id in backend.list_job_ids():
        answers[f"GET /jobs/{job_id}/status"] = backend.status(job_id)
        answers[f"GET /jobs/{job_id}/log"] = backend.log(job_id)
        answers[f"GET /jobs/{job_id}/results"] = backend.results(job_id)
        answers[f"POST /jobs/{job_id}/rerun"] = backend.rerun(job_id)
        for name in downloads.get(job_id, []):
            answers[f"GET /jobs/{job_id}/download/{name}"] = backend.download(job_id, name)
    return answers


def asked_downloads(data_dir: Path, backend: LegacyBackend) -> dict[str, list[str]]:
    """Each job's output files on disk, and the ones its result names."""
    asked: dict[str, list[str]] = {}
    for job_id in backend.list_job_ids():
        names = {p.name for p in (data_dir / "outputs" / job_id).glob("*")}
        result = backend.results(job_id)
        files = result.get("files") if isinstance(result, dict) else None
        names |= set(files.values()) if isinstance(files, dict) else set()
        asked[job_id] = sorted(names | {"missing.csv"})
    return asked


@pytest.mark.parametrize("tree", ["sample", "generated"])
def test_the_legacy_backend_serves_the_export_as_it_served_the_original_tree(
    tree: str, sample_tree: Path, dsn: str, tmp_path: Path
) -> None:
    if tree == "generated":
        source = generate(tmp_path / "generated" / "data", TreeShape(jobs=300, seed=5))
    else:
        source = sample_tree
    assert run("backfill", source, "--dsn", dsn, "-q", "--file-store", "db").exit_code == 0
    target = tmp_path / "export" / "data"

    result = run("export", target, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    before, after = LegacyBackend(source), LegacyBackend(target)
    downloads = asked_downloads(source, before)
    original, exported = served(before, downloads), served(after, downloads)
    assert len(original["GET /jobs"]["jobs"]) == (300 if tree == "generated" else 11)
    assert sum(isinstance(v, bytes) for v in original.values()) > 10
    assert sum(isinstance(v, tuple) for v in original.values()) >= 1  # a rerun that runs
    assert exported.keys() == original.keys()
    for endpoint, answer in original.items():
        assert exported[endpoint] == answer, endpoint


ENSEMBLE, FAILED, PENDING, SINGLE = (f"5e1f0000-0000-4000-8000-00000000000{n}" for n in range(1, 5))
#: jobs as the dashboard creates them on a pod: an ensemble that completed with outputs
#: (one of them never stored), a failed one, a pending one, and one with its upload
DASHBOARD_JOBS = [
    {
        "id": ENSEMBLE,
        "type": "vacalibration",
        "status": "completed",
        "algorithm": ["InterVA", "InSilicoVA"],
        "ensemble": True,
        "age_group": "neonate",
        "country": "Mozambique",
        "calib_model_type": "Mmatprior",
        "use_sample_data": True,
        "n_mcmc": 5000,
        "n_burn": 2000,
        "n_thin": 1,
        "log": ["Starting vacalibration", "Ensemble calibration complete"],
        "result": {"files": {"summary": "calibration_summary.csv"}, "n_records": 81},
        "outputs": {"calibration_summary.csv": b"cause,csmf\nsepsis,0.4\n", "lost.png": b""},
    },
    {
        "id": FAILED,
        "type": "openva",
        "status": "failed",
        "algorithm": ["InterVA"],
        "age_group": "child",
        "country": "Kenya",
        "use_sample_data": True,
        "log": ["Starting openVA processing"],
        "error": "cannot open the connection",
    },
    {
        "id": PENDING,
        "type": "pipeline",
        "status": "pending",
        "algorithm": ["EAVA"],
        "age_group": "neonate",
        "country": "Mali",
        "demo_id": "neonate_eava_mali",
        "demo_name": "Neonate EAVA (Mali)",
    },
    {
        "id": SINGLE,
        "type": "openva",
        "status": "completed",
        "algorithm": ["InterVA"],
        "age_group": "neonate",
        "country": "Mozambique",
        "input_file": f"data/uploads/{SINGLE}/input.csv",
        "inputs": {"input.csv": b"ID,q1\n1,y\n"},
        "log": ["Loading data from: data/uploads/x/input.csv", "Results saved"],
        "result": {"files": {"causes": "causes.csv"}, "n_records": 1},
        "outputs": {"causes.csv": b"ID,cause1\n1,Sepsis\n"},
    },
]


@pytest.fixture
def dashboard_jobs(dsn: str, tmp_path: Path) -> dict[str, Any]:
    """The dashboard's own jobs in the database, their sidecars and outputs in the store as
    the daemon beside its pod keeps them (lost.png never was)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_input_files_table(conn)
    for job in DASHBOARD_JOBS:
        insert_as_dashboard(dsn, job)
        store_file(dsn, job["id"], f"jobs/{job['id']}.json", sidecar_bytes(job), 10**18)
        for name, content in job.get("outputs", {}).items():
            if name != "lost.png":
                store_file(dsn, job["id"], f"outputs/{job['id']}/{name}", content, 10**18)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, status, created_at, started_at, completed_at, error, result FROM jobs"
        ).fetchall()
        logs = conn.execute(
            "SELECT job_id::text, timestamp, message FROM job_logs ORDER BY timestamp, id"
        ).fetchall()
    return {
        "rows": {row[0]: row for row in rows},
        "logs": {
            job["id"]: [(t, m) for j, t, m in logs if j == job["id"]] for job in DASHBOARD_JOBS
        },
    }


def test_the_dashboards_own_jobs_are_served_by_the_legacy_backend_as_the_dashboard_served_them(
    dashboard_jobs: dict[str, Any], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "export" / "data"

    result = run("export", target, "--dsn", dsn, "-q")

    assert result.exit_code == 0, result.output
    assert "output_not_stored (1)" in result.output
    legacy = LegacyBackend(target)
    assert [job["job_id"] for job in legacy.jobs()["jobs"]] == sorted(dashboard_jobs["rows"])
    for job in DASHBOARD_JOBS:
        _, status, created, started, completed, error, result_ = dashboard_jobs["rows"][job["id"]]
        algorithm = job["algorithm"] if len(job["algorithm"]) > 1 else job["algorithm"][0]
        assert legacy.status(job["id"]) == {
            "job_id": job["id"],
            "type": job["type"],
            "status": status,
            "algorithm": algorithm,  # the sidecar's list, as the dashboard's load_job() reads it
            "age_group": job["age_group"],
            "country": job["country"],
            "created_at": legacy_time(created),
            "started_at": legacy_time(started) if started else {},
            "completed_at": legacy_time(completed) if completed else {},
            "error": error["message"] if error else {},  # the legacy string
        }
        lines = [f"[{t:%Y-%m-%d %H:%M:%S}] {m}" for t, m in dashboard_jobs["logs"][job["id"]]]
        served_log = legacy.log(job["id"])["log"]
        assert served_log == (lines[0] if len(lines) == 1 else lines)
        if status == "completed":
            assert legacy.results(job["id"]) == result_
        else:
            assert legacy.results(job["id"]) == {"error": "Job not completed", "status": status}
        for name, content in job.get("outputs", {}).items():
            expected = "500: File not found" if name == "lost.png" else content
            assert legacy.download(job["id"], name) == expected
    answer, new_job, copied = legacy.rerun(SINGLE)
    assert answer["original_job_id"] == SINGLE
    assert copied == b"ID,q1\n1,y\n"  # the upload, from job_input_files
    assert new_job["algorithm"] == "InterVA"
    assert legacy.rerun(FAILED) == {"error": "Original input file not found"}


def test_a_dashboard_job_exports_to_a_json_the_normaliser_reads_back_to_its_row(
    dashboard_jobs: dict[str, Any], dsn: str, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    assert run("export", target, "--dsn", dsn, "-q").exit_code == 0

    with psycopg.connect(dsn, autocommit=True) as conn:
        columns = "type, status, algorithm, age_group, country, calib_model_type, ensemble,"
        columns += " created_at, started_at, completed_at, coalesce(error, '{}'), result,"
        columns += " input_file_path"
        rows = {
            row[0]: row[1:]
            for row in conn.execute(f"SELECT id::text, {columns} FROM jobs").fetchall()
        }
    for job in DASHBOARD_JOBS:
        raw = (target / "jobs" / f"{job['id']}.json").read_bytes()
        source = JobSource(job["id"], f"jobs/{job['id']}.json", len(raw), 0, 0, (), (), "")
        record = parse_job(raw, source, target).record
        assert record is not None
        read_back = (
            record.type,
            record.status,
            record.algorithm,
            record.age_group,
            record.country,
            record.calib_model_type,
            record.ensemble,
            record.created_at,
            record.started_at,
            record.completed_at,
            record.error,
            record.result,
            None if record.input_file_path is None else "data/" + record.input_file_path,
        )
        assert read_back == rows[job["id"]], job["id"]
        doc = orjson.loads(raw)
        for key in ("use_sample_data", "demo_id", "demo_name", "n_mcmc", "n_burn", "n_thin"):
            assert doc.get(key) == job.get(key), key
        assert doc["algorithm"] == (
            job["algorithm"] if len(job["algorithm"]) > 1 else job["algorithm"][0]
        )
        assert list(doc)[:3] == ["id", "type", "status"]
