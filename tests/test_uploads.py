"""An upload's bytes for job_input_files are read from where the scan saw the file, never
through a symbolic link put on the way since; a large one travels by its digest and is
read again, in chunks, to be sent."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.tree import scan
from comsa_migrate.core.uploads import (
    CHUNK_BYTES,
    STORABLE_INPUT_BYTES,
    InlineBudget,
    input_contents,
)

JOB = "0a1b2c3d-0000-4000-8000-000000000001"
OLD_NS = 1_700_000_000_000_000_000


@pytest.fixture
def scanned(tmp_path: Path) -> tuple[Path, JobSource]:
    """A job with uploads/<id>/sub/input.csv, scanned; and a secret file outside the tree."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / f"{JOB}.json").write_text('{"type": "openva", "status": "completed"}')
    (data / "uploads" / JOB / "sub").mkdir(parents=True)
    (data / "uploads" / JOB / "sub" / "input.csv").write_text("ID\n1\n")
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub" / "input.csv").write_text("secret\n")
    for path in data.rglob("*"):
        os.utime(path, ns=(OLD_NS, OLD_NS))
    [source] = [item for item in scan(data) if isinstance(item, JobSource)]
    return data, source


def test_an_upload_is_read_as_the_scan_saw_it(scanned: tuple[Path, JobSource]) -> None:
    data, source = scanned

    inputs, problems = input_contents(data, source, 1024)

    assert inputs.entries == [("input.csv", "SUQKMQo=")]  # base64 of "ID\n1\n"
    assert inputs.streamed == ()
    assert problems == []


@pytest.mark.parametrize("swapped", [JOB, f"{JOB}/sub"])
def test_a_folder_swapped_for_a_symlink_since_the_scan_is_not_read_through(
    scanned: tuple[Path, JobSource], swapped: str
) -> None:
    data, source = scanned
    outside = data.parent / "outside" / ("sub" if swapped.endswith("sub") else "")
    shutil.rmtree(data / "uploads" / swapped)
    (data / "uploads" / swapped).symlink_to(outside)

    inputs, problems = input_contents(data, source, 1024)

    assert inputs.entries == []
    assert [(p.code, p.path) for p in problems] == [("unreadable", f"uploads/{JOB}/sub/input.csv")]
    assert "since the scan" in problems[0].message


def test_a_file_swapped_for_a_fifo_since_the_scan_is_not_read_as_empty(
    scanned: tuple[Path, JobSource],
) -> None:
    data, source = scanned
    upload = data / "uploads" / JOB / "sub" / "input.csv"
    upload.unlink()
    os.mkfifo(upload)

    inputs, problems = input_contents(data, source, 1024)

    assert inputs.entries == []
    assert [p.code for p in problems] == ["unreadable"]


def _upload(data: Path, name: str, content: bytes) -> JobSource:
    """The job of ``scanned`` with one more upload, scanned again."""
    path = data / "uploads" / JOB / name
    path.write_bytes(content)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    [source] = [item for item in scan(data) if isinstance(item, JobSource)]
    return source


def test_a_large_upload_is_carried_by_its_digest_and_its_chunks_join_into_its_base64(
    scanned: tuple[Path, JobSource],
) -> None:
    data, _ = scanned
    content = bytes(range(256)) * (2 * CHUNK_BYTES // 256) + b"tail"  # three chunks
    source = _upload(data, "large.bin", content)
    b64 = base64.b64encode(content)

    inputs, problems = input_contents(data, source, 10 * len(content), InlineBudget(1024))

    assert problems == []
    assert inputs.entries == [
        ("input.csv", "SUQKMQo="),
        ("large.bin", hashlib.md5(b64).hexdigest(), len(content)),
    ]
    [streamed] = inputs.streamed
    chunks = list(streamed.chunks())
    assert len(chunks) == 3
    assert b"".join(chunks) == b64
    assert all(len(chunk) % 4 == 0 and b"\n" not in chunk for chunk in chunks)


def test_past_a_batchs_budget_even_a_small_upload_is_streamed(
    scanned: tuple[Path, JobSource],
) -> None:
    data, _ = scanned
    source = _upload(data, "second.csv", b"ID\n2\n3\n")
    budget = InlineBudget(per_upload=1024, left=10)

    inputs, _ = input_contents(data, source, 1024, budget)

    assert inputs.entries[0] == ("input.csv", "SUQKMQo=")  # 5 bytes: taken
    assert inputs.entries[1][0] == "second.csv" and len(inputs.entries[1]) == 3  # 7: not
    assert budget.left == 5


def test_an_upload_that_grew_since_its_digest_is_sent_only_one_byte_further(
    scanned: tuple[Path, JobSource],
) -> None:
    data, _ = scanned
    source = _upload(data, "large.bin", b"x" * 3000)
    inputs, _ = input_contents(data, source, 10_000, InlineBudget(per_upload=100))
    (data / "uploads" / JOB / "large.bin").write_bytes(b"x" * 9000)

    [streamed] = inputs.streamed

    assert base64.b64decode(b"".join(streamed.chunks())) == b"x" * 3001


def test_an_upload_swapped_for_a_symlink_before_it_is_sent_sends_nothing(
    scanned: tuple[Path, JobSource], caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = scanned
    source = _upload(data, "large.bin", b"x" * 3000)
    inputs, _ = input_contents(data, source, 10_000, InlineBudget(per_upload=100))
    large = data / "uploads" / JOB / "large.bin"
    large.unlink()
    large.symlink_to(data.parent / "outside" / "sub" / "input.csv")

    [streamed] = inputs.streamed

    assert list(streamed.chunks()) == []
    assert "cannot read it again" in caplog.text


def test_an_upload_whose_base64_cannot_fit_in_one_postgresql_value_is_left_out(
    scanned: tuple[Path, JobSource],
) -> None:
    data, _ = scanned
    source = _upload(data, "huge.bin", b"")
    with (data / "uploads" / JOB / "huge.bin").open("r+b") as sparse:
        sparse.truncate(STORABLE_INPUT_BYTES + 1)
    [source] = [item for item in scan(data) if isinstance(item, JobSource)]

    inputs, problems = input_contents(data, source, 2**40)

    assert [entry[0] for entry in inputs.entries] == ["input.csv"]
    [problem] = problems
    assert problem.code == "input_too_large"
    assert "one PostgreSQL value (1 GB)" in problem.message
    assert 4 * -(-STORABLE_INPUT_BYTES // 3) + 4 < 2**30  # its base64 and a value's header
