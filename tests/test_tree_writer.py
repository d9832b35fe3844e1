"""The tree writer on the real file system: a file that appears at its name while it is
being written (a legacy processor still running) is never overwritten without --force."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from comsa_migrate.core.tree_writer import TreeFile, TreeWriteOptions, TreeWriter, unsafe_reason

JOB = "653475d0-3a75-4bb6-b1cb-a3c466a6c02e"
PATH = f"outputs/{JOB}/causes.csv"
STORED = b"cause,n\nsepsis,3\n"


def appearing_meanwhile(target: Path, content: bytes) -> TreeFile:
    """The stored file, whose reading makes ``content`` appear at its name: after the
    writer looked, before it publishes."""

    def chunks() -> Iterator[bytes]:
        target.write_bytes(content)
        yield STORED

    digest = hashlib.sha256(STORED).hexdigest()
    return TreeFile(PATH, JOB, digest, len(STORED), None, chunks)


def test_a_different_file_made_during_the_write_is_left_alone_and_counted(
    tmp_path: Path,
) -> None:
    target = tmp_path / PATH
    writer = TreeWriter(tmp_path, TreeWriteOptions())

    outcome = writer.write(appearing_meanwhile(target, b"written by the processor\n"))

    assert outcome.action == "kept"
    assert outcome.problem is not None and outcome.problem.code == "file_differs"
    assert target.read_bytes() == b"written by the processor\n"
    assert [p.name for p in target.parent.iterdir()] == ["causes.csv"], "no temporary file left"


def test_the_same_file_made_during_the_write_is_unchanged(tmp_path: Path) -> None:
    target = tmp_path / PATH
    writer = TreeWriter(tmp_path, TreeWriteOptions())

    outcome = writer.write(appearing_meanwhile(target, STORED))

    assert (outcome.action, outcome.problem) == ("unchanged", None)
    assert target.read_bytes() == STORED
    assert [p.name for p in target.parent.iterdir()] == ["causes.csv"]


def test_with_force_a_file_made_during_the_write_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / PATH
    writer = TreeWriter(tmp_path, TreeWriteOptions(force=True))

    outcome = writer.write(appearing_meanwhile(target, b"written by the processor\n"))

    assert outcome.action == "written"
    assert target.read_bytes() == STORED


def test_a_file_with_the_content_written_there_before_is_replaced_without_force(
    tmp_path: Path,
) -> None:
    target = tmp_path / PATH
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the stored original\n")
    earlier = hashlib.sha256(b"the stored original\n").hexdigest()
    digest = hashlib.sha256(STORED).hexdigest()
    item = TreeFile(
        PATH, JOB, digest, len(STORED), None, lambda: iter((STORED,)), replaceable=earlier
    )

    outcome = TreeWriter(tmp_path, TreeWriteOptions()).write(item)

    assert (outcome.action, outcome.problem) == ("replaced", None)
    assert target.read_bytes() == STORED


@pytest.mark.parametrize(
    "path", [f"uploads/{JOB}", f"outputs/{JOB}", f"jobs/{JOB}.csv", f"jobs/{JOB}", "jobs/x/y.json"]
)
def test_a_path_that_is_not_a_jobs_file_is_unsafe_whoever_asks(path: str) -> None:
    assert unsafe_reason(path) is not None
    assert unsafe_reason(path, JOB) is not None


@pytest.mark.parametrize(
    "path", [f"jobs/{JOB}.json", f"jobs/{JOB.upper()}.JSON", f"uploads/{JOB}/a.csv"]
)
def test_a_jobs_own_file_is_safe(path: str) -> None:
    assert unsafe_reason(path) is None
    assert unsafe_reason(path, JOB) is None
