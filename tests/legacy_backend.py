"""The legacy backend's endpoints, read faithfully in Python, to compare what it serves from
two trees (the legacy backend is R and plumber, which the tests cannot run).

It mirrors ``backend/plumber.R`` of the public repository cliu238/comsa_dashboard at commit
1c88b061d1ff377ff3317df4015372b7bdd0ddbb (the parent of c40a3ab, the last file-based
backend), with ``save_job``/``load_job``/``list_job_ids``/``job_exists`` as it defines them:

- the backend runs in ``backend/``; its paths are relative to it (``data/jobs/<id>.json``,
  ``data/outputs/<id>/<file>``, and a job's ``input_file``, ``data/uploads/<id>/input.csv``);
- ``load_job`` is jsonlite's ``fromJSON(file)``: an array of scalars becomes an atomic
  vector, ``{}`` an empty named list, an object a named list; a field that is absent
  reads as R's NULL;
- responses go through ``@serializer json list(auto_unbox = TRUE)``: a vector of length 1
  is written as its one value, NULL as ``{}``;
- GET /jobs lists ``list.files("data/jobs", pattern = "\\.json$")`` in sorted order;
- GET /jobs/<id>/status, /log and /results answer ``{"error": "Job not found"}`` for a
  job with no JSON; /results answers ``{"error": "Job not completed", "status": ...}``
  unless the status is "completed";
- GET /jobs/<id>/download/<file> stops with "Job not found" or "File not found"
  (plumber's 500), else answers the file's bytes;
- POST /jobs/<id>/rerun answers "Original input file not found" unless the job's
  ``input_file`` exists, else a new job with the old one's parameters (its id and time
  are new: ``NEW`` here), and copies the input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

__all__ = ["NEW", "LegacyBackend"]

#: what stands for a value the backend makes anew on each call (a UUID, the time)
NEW = "<new>"


class _Vector(tuple):  # type: ignore[type-arg]
    """An R atomic vector, as fromJSON simplifies an array of scalars."""


def _from_json(value: Any) -> Any:
    """jsonlite::fromJSON(simplifyVector = TRUE), as far as a job's JSON needs it."""
    if isinstance(value, dict):
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        if all(item is None or isinstance(item, str | int | float | bool) for item in value):
            return _Vector(value)
        return [_from_json(item) for item in value]
    return _Vector((value,))


def _to_json(value: Any) -> Any:
    """toJSON(auto_unbox = TRUE) of an R value, as a Python value (NULL is {})."""
    if value is None:
        return {}
    if isinstance(value, _Vector):
        return value[0] if len(value) == 1 else list(value)
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return value


class LegacyBackend:
    """The legacy backend over one DATA_DIR (its working folder is DATA_DIR's parent)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.parent
        self.data = data_dir

    def _path(self, legacy: str) -> Path:
        # "data/..." is DATA_DIR whatever it is called, as it is for the normaliser
        first, _, rest = legacy.partition("/")
        return self.data / rest if first == "data" else self.root / legacy

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        path = self.data / "jobs" / f"{job_id}.json"
        if not path.exists():
            return None
        raw = path.read_bytes()
        loaded: dict[str, Any] = _from_json(orjson.loads(raw.removeprefix(b"\xef\xbb\xbf")))
        return loaded

    def list_job_ids(self) -> list[str]:
        names = sorted(p.name for p in (self.data / "jobs").iterdir())
        return [re.sub(r"\.json$", "", n) for n in names if re.search(r"\.json$", n)]

    def jobs(self) -> Any:
        listed = []
        for job_id in self.list_job_ids():
            job = self.load_job(job_id) or {}
            keys = ("type", "status", "created_at")
            listed.append({"job_id": job.get("id"), **{k: job.get(k) for k in keys}})
        return _to_json({"jobs": listed})

    def status(self, job_id: str) -> Any:
        job = self.load_job(job_id)
        if job is None:
            return {"error": "Job not found"}
        keys = ("type", "status", "algorithm", "age_group", "country", "created_at")
        keys += ("started_at", "completed_at", "error")
        return _to_json({"job_id": job.get("id"), **{k: job.get(k) for k in keys}})

    def log(self, job_id: str) -> Any:
        job = self.load_job(job_id)
        if job is None:
            return {"error": "Job not found"}
        return _to_json({"job_id": job.get("id"), "log": job.get("log")})

    def results(self, job_id: str) -> Any:
        job = self.load_job(job_id)
        if job is None:
            return {"error": "Job not found"}
        if job.get("status") != _Vector(("completed",)):
            return _to_json({"error": _Vector(("Job not completed",)), "status": job.get("status")})
        return _to_json(job.get("result"))

    def download(self, job_id: str, filename: str) -> bytes | str:
        if not (self.data / "jobs" / f"{job_id}.json").exists():
            return "500: Job not found"
        path = self.data / "outputs" / job_id / filename
        if not path.exists():
            return "500: File not found"
        return path.read_bytes()

    def rerun(self, job_id: str) -> Any:
        """The answer, the new job's JSON value and the input it copies (nothing written)."""
        old = self.load_job(job_id)
        if old is None:
            return {"error": "Job not found"}
        input_file = old.get("input_file")
        if input_file is None or not self._path(str(input_file[0])).exists():
            return {"error": "Original input file not found"}
        keys = ("type", "algorithm", "age_group", "country", "calib_model_type", "ensemble")
        new_job = {
            "id": NEW,
            **{k: old.get(k) for k in keys[:1]},
            "status": "pending",
            **{k: old.get(k) for k in keys[1:]},
            "created_at": NEW,
            "started_at": None,
            "completed_at": None,
            "error": None,
            "result": None,
            "log": _Vector(()),
            "input_file": f"data/uploads/{NEW}/input.csv",
            "rerun_of": job_id,
        }
        answer = {
            "job_id": NEW,
            "status": "pending",
            "message": f"Rerun of job {job_id} submitted successfully",
            "original_job_id": job_id,
        }
        return answer, _to_json(new_job), self._path(str(input_file[0])).read_bytes()
