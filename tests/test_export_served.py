"""The legacy backend over an export serves what it served over the original tree, and what
the database-backed dashboard served of the jobs it created (tests/legacy_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bench.generate import TreeShape, generate
from comsa_migrate.cli import main

from .legacy_backend import LegacyBackend


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
