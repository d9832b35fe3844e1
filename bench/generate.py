"""Deterministic legacy trees shaped like the dashboard's job store, for the benchmark."""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

__all__ = ["TreeShape", "generate"]

#: causes of the openVA step (InterVA's WHO 2016 list, as the legacy sample has it)
OPENVA_CAUSES = (
    "Sepsis (non-obstetric)",
    "Acute resp infect incl pneumonia",
    "HIV/AIDS related death",
    "Diarrhoeal diseases",
    "Malaria",
    "Measles",
    "Meningitis and encephalitis",
    "Tetanus",
    "Pulmonary tuberculosis",
    "Pertussis",
    "Haemorrhagic fever (non-dengue)",
    "Dengue fever",
    "Other and unspecified infect dis",
    "Oral neoplasms",
    "Digestive neoplasms",
    "Respiratory neoplasms",
    "Breast neoplasms",
    "Reproductive neoplasms MF",
    "Other and unspecified neoplasms",
    "Severe anaemia",
    "Severe malnutrition",
    "Diabetes mellitus",
    "Acute cardiac disease",
    "Stroke",
    "Sickle cell with crisis",
    "Other and unspecified cardiac dis",
    "Chronic obstructive pulmonary dis",
    "Asthma",
    "Acute abdomen",
    "Liver cirrhosis",
    "Renal failure",
    "Epilepsy",
    "Ectopic pregnancy",
    "Abortion-related death",
    "Pregnancy-induced hypertension",
    "Obstetric haemorrhage",
    "Obstructed labour",
    "Pregnancy-related sepsis",
    "Anaemia of pregnancy",
    "Ruptured uterus",
    "Other and unspecified maternal CoD",
    "Prematurity",
    "Birth asphyxia",
    "Neonatal pneumonia",
    "Neonatal sepsis",
    "Congenital malformation",
    "Other and unspecified neonatal CoD",
    "Fresh stillbirth",
    "Macerated stillbirth",
    "Road traffic accident",
    "Other transport accident",
    "Accid fall",
    "Accid drowning and submersion",
    "Accid expos to smoke fire & flame",
    "Contact with venomous plant/animal",
    "Accid poisoning & noxious subs",
    "Intentional self-harm",
    "Assault",
    "Exposure to force of nature",
    "Other and unspecified external CoD",
    "Other and unspecified NCD",
    "Undetermined",
)
BROAD_CAUSES = (
    "congenital_malformation",
    "pneumonia",
    "sepsis_meningitis_inf",
    "ipre",
    "other",
    "prematurity",
)
COUNTRIES = ("Mozambique", "Ethiopia", "Kenya", "Mali", "Sierra Leone", "South Africa")
AGE_GROUPS = ("neonate", "child")
ALGORITHMS = ("InterVA", "InSilicoVA", "EAVA")
TYPES = (("pipeline", 0.5), ("vacalibration", 0.3), ("openva", 0.2))
START = datetime(2025, 6, 1)
EPOCH = datetime(1970, 1, 1)
_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class TreeShape:
    """How many jobs, and which share of them failed or came with an upload."""

    jobs: int
    seed: int = 20_000
    failed_share: float = 0.03
    upload_share: float = 0.15


def generate(data_dir: Path, shape: TreeShape) -> Path:
    """Write ``shape.jobs`` jobs under ``data_dir`` (jobs/, uploads/, outputs/).

    Returns ``data_dir``. The same seed gives the same names, bytes and mtimes: each file
    is dated when its job finished, months in the past, as in a real store (so that no
    fingerprint is racy).
    """
    rng = random.Random(shape.seed)
    for folder in ("jobs", "uploads", "outputs"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    for _ in range(shape.jobs):
        _write_job(data_dir, rng, shape)
    return data_dir


def _write_job(data_dir: Path, rng: random.Random, shape: TreeShape) -> None:
    job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    job_type = rng.choices([t for t, _ in TYPES], [w for _, w in TYPES])[0]
    created = START + timedelta(seconds=rng.randrange(200 * 86_400))
    started = created + timedelta(seconds=rng.randint(1, 3))
    failed = rng.random() < shape.failed_share
    upload = failed or rng.random() < shape.upload_share
    doc: dict[str, object] = {
        "id": job_id,
        "type": job_type,
        "status": "failed" if failed else "completed",
        "algorithm": rng.choice(ALGORITHMS),
        "age_group": rng.choice(AGE_GROUPS),
        "country": rng.choice(COUNTRIES),
        "created_at": _ts(created),
        "started_at": _ts(started),
    }
    input_rel = f"data/uploads/{job_id}/input.csv"
    written: list[Path] = []
    if failed:
        doc["completed_at"] = doc["started_at"]
        doc["error"] = "cannot open the connection"
        doc["result"] = {}
        doc["log"] = [
            f"[{_ts(started)}] Starting {job_type}",
            f"[{_ts(started)}] Loading data from: {input_rel}",
        ]
    else:
        finished = started + timedelta(seconds=rng.randint(3, 25))
        doc["completed_at"] = _ts(finished)
        doc["error"] = {}
        doc["result"] = _result(rng, job_type, doc)
        doc["log"] = _log(rng, job_type, started, finished, input_rel if upload else None)
    if upload:
        doc["input_file"] = input_rel
        written.append(_write(data_dir / "uploads" / job_id / "input.csv", _csv(rng, 40)))
    else:
        doc["use_sample_data"] = True
    written.append(_write(data_dir / "jobs" / f"{job_id}.json", orjson.dumps(doc)))
    if not failed:
        outputs = data_dir / "outputs" / job_id
        written.append(_write(outputs / "calibration_summary.csv", _csv(rng, 6)))
        if job_type != "vacalibration":
            written.append(_write(outputs / "causes.csv", _csv(rng, 60)))
        if job_type == "vacalibration" or rng.random() < 0.5:
            written.append(_write(outputs / "csmf.csv", _csv(rng, 12)))
    finished = datetime.strptime(str(doc["completed_at"]), _FORMAT)
    mtime_ns = int((finished - EPOCH).total_seconds()) * 1_000_000_000
    for path in written:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _result(rng: random.Random, job_type: str, doc: dict[str, object]) -> dict[str, object]:
    result: dict[str, object] = {
        "algorithm": str(doc["algorithm"]).lower(),
        "age_group": doc["age_group"],
        "country": doc["country"],
    }
    if job_type in ("pipeline", "openva"):
        result["n_records"] = rng.randint(30, 400)
        result["openva_csmf"] = _csmf(rng, OPENVA_CAUSES, zeros=0.85)
        result["cause_counts"] = {c: rng.randint(1, 40) for c in rng.sample(OPENVA_CAUSES, 7)}
    if job_type in ("pipeline", "vacalibration"):
        for key in ("uncalibrated_csmf", "calibrated_csmf", "calibrated_ci_lower"):
            result[key] = _csmf(rng, BROAD_CAUSES)
        result["calibrated_ci_upper"] = _csmf(rng, BROAD_CAUSES)
    files = {"summary": "calibration_summary.csv"}
    if job_type != "vacalibration":
        files["causes"] = "causes.csv"
    result["files"] = files
    return result


def _csmf(rng: random.Random, causes: tuple[str, ...], zeros: float = 0.0) -> dict[str, float]:
    return {c: 0 if rng.random() < zeros else round(rng.random(), 4) for c in causes}


def _log(
    rng: random.Random, job_type: str, started: datetime, finished: datetime, upload: str | None
) -> list[str]:
    source = f"Loading data from: {upload}" if upload else "Loading sample data"
    steps = [
        f"Starting {job_type}",
        "=== Step 1: openVA ===",
        source,
        f"Data loaded: {rng.randint(30, 400)} records",
        f"Running {rng.choice(ALGORITHMS)}",
        f"openVA complete: {rng.randint(20, 300)} causes assigned",
        "=== Step 2: Prepare for calibration ===",
        "Cause distribution: " + ", ".join(rng.sample(OPENVA_CAUSES, 6)),
        "=== Step 3: vacalibration ===",
        "Calibration complete",
        "All results saved",
    ]
    count = rng.randint(8, 12)
    middle = started + (finished - started) / 2
    lines = [
        f"[{_ts(started if i < count // 2 else middle)}] {steps[i % len(steps)]}"
        for i in range(count - 1)
    ]
    lines.append(f"[{_ts(finished)}] {steps[-1]}")
    return lines


def _csv(rng: random.Random, rows: int) -> bytes:
    lines = ["cause,value"] + [
        f"{rng.choice(BROAD_CAUSES)},{rng.random():.4f}" for _ in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _write(path: Path, content: bytes) -> Path:
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(content)
    return path


def _ts(moment: datetime) -> str:
    return moment.strftime(_FORMAT)
