"""The scan of the legacy layout: jobs, their files, what is not a job, and fingerprints."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem
from pyfakefs.fake_filesystem_unittest import Patcher

from comsa_migrate.core.jsonread import read_job_json
from comsa_migrate.core.layout import FileStat, JobSource, ScanItem, utc_from_ns
from comsa_migrate.core.tree import count_job_files, job_source, scan
from comsa_migrate.errors import DataDirError
from comsa_migrate.problems import Problem

JOB = "0a1b2c3d-0000-4000-8000-000000000001"
JOB2 = "0a1b2c3d-0000-4000-8000-000000000002"
ORPHAN = "0a1b2c3d-0000-4000-8000-0000000000ff"
#: an mtime long past, so that fingerprints are trusted ("racy-" only marks fresh files)
OLD_NS = 1_700_000_000_000_000_000
JOB_JSON = b'{"type": "openva", "status": "completed"}'


def write(path: Path, content: bytes = b"x", mtime_ns: int = OLD_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty legacy data folder: jobs/, uploads/ and outputs/."""
    root = tmp_path / "backend" / "data"
    for folder in ("jobs", "uploads", "outputs"):
        (root / folder).mkdir(parents=True)
    return root


def add_job(data_dir: Path, job_id: str = JOB, name: str | None = None) -> Path:
    return write(data_dir / "jobs" / (name or f"{job_id}.json"), JOB_JSON)


def scan_all(data_dir: Path) -> tuple[dict[str, JobSource], list[tuple[str, str | None, str]]]:
    """The jobs a scan finds, and its problems as sorted (code, job_id, path)."""
    items: list[ScanItem] = list(scan(data_dir))
    jobs = {item.job_id: item for item in items if isinstance(item, JobSource)}
    assert len(jobs) == sum(isinstance(item, JobSource) for item in items), "a job twice"
    found = sorted(
        (item.code, item.job_id, item.path or "") for item in items if isinstance(item, Problem)
    )
    return jobs, found


def only_job(data_dir: Path) -> JobSource:
    jobs, _ = scan_all(data_dir)
    assert list(jobs) == [JOB]
    return jobs[JOB]


def fingerprint(data_dir: Path) -> str:
    return only_job(data_dir).fingerprint


# -- jobs and their files -------------------------------------------------------------------


def test_a_job_json_becomes_a_source_with_its_stat(data_dir: Path) -> None:
    path = add_job(data_dir)

    source = only_job(data_dir)

    st = path.stat()
    assert (source.job_id, source.json_path) == (JOB, f"jobs/{JOB}.json")
    assert (source.json_size, source.json_mtime_ns, source.json_ino) == (
        len(JOB_JSON),
        OLD_NS,
        st.st_ino,
    )
    assert source.files == ()
    assert source.problems == ()


def test_every_regular_file_under_uploads_and_outputs_belongs_to_its_job_at_any_depth(
    data_dir: Path,
) -> None:
    add_job(data_dir)
    write(data_dir / "uploads" / JOB / "input.csv", b"ID\n1\n", OLD_NS + 1)
    write(data_dir / "uploads" / JOB / "extra" / "codebook.csv", b"abc", OLD_NS + 2)
    write(data_dir / "outputs" / JOB / "causes.csv", b"cause,n\n", OLD_NS + 3)
    write(data_dir / "outputs" / JOB / "a" / "b" / "c" / "deep.rds", b"0123456789", OLD_NS + 4)

    files = only_job(data_dir).files

    assert files == (
        FileStat("input", "codebook.csv", f"uploads/{JOB}/extra/codebook.csv", 3, OLD_NS + 2),
        FileStat("input", "input.csv", f"uploads/{JOB}/input.csv", 5, OLD_NS + 1),
        FileStat("output", "deep.rds", f"outputs/{JOB}/a/b/c/deep.rds", 10, OLD_NS + 4),
        FileStat("output", "causes.csv", f"outputs/{JOB}/causes.csv", 8, OLD_NS + 3),
    )


def test_an_empty_file_is_a_file_of_size_zero(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "outputs" / JOB / "empty.csv", b"")

    assert [(f.file_name, f.size) for f in only_job(data_dir).files] == [("empty.csv", 0)]


def test_files_of_one_job_are_not_given_to_another(data_dir: Path) -> None:
    add_job(data_dir, JOB)
    add_job(data_dir, JOB2)
    write(data_dir / "outputs" / JOB / "one.csv")
    write(data_dir / "outputs" / JOB2 / "two.csv")

    jobs, found = scan_all(data_dir)

    assert [f.file_name for f in jobs[JOB].files] == ["one.csv"]
    assert [f.file_name for f in jobs[JOB2].files] == ["two.csv"]
    assert found == []


def test_an_upper_case_file_name_gives_a_lower_case_job_id(data_dir: Path) -> None:
    add_job(data_dir, name=f"{JOB.upper()}.json")
    write(data_dir / "outputs" / JOB.upper() / "causes.csv")

    jobs, found = scan_all(data_dir)

    assert list(jobs) == [JOB]
    assert [f.file_path for f in jobs[JOB].files] == [f"outputs/{JOB.upper()}/causes.csv"]
    assert found == []


@pytest.mark.parametrize(
    "name",
    [".DS_Store", ".hidden.csv", "input.csv~", ".input.csv.swp", "input.swp", "out.tmp", "x.part"],
)
def test_hidden_editor_and_temporary_files_are_ignored(data_dir: Path, name: str) -> None:
    add_job(data_dir)
    write(data_dir / "uploads" / JOB / "input.csv")
    write(data_dir / "uploads" / JOB / name)
    write(data_dir / "outputs" / JOB / "sub" / name)

    jobs, found = scan_all(data_dir)

    assert [f.file_name for f in jobs[JOB].files] == ["input.csv"]
    assert found == []


def test_hidden_folders_are_ignored_with_everything_in_them(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "outputs" / JOB / ".cache" / "big.rds")
    write(data_dir / ".git" / "HEAD")
    write(data_dir / "uploads" / ".staging" / "x.csv")

    jobs, found = scan_all(data_dir)

    assert jobs[JOB].files == ()
    assert found == []


@pytest.mark.parametrize(
    "name", [f".{JOB}.json", f"{JOB}.json~", f"{JOB}.json.tmp", f"{JOB}.json.part", f".{JOB}.swp"]
)
def test_hidden_and_temporary_job_files_are_ignored(data_dir: Path, name: str) -> None:
    write(data_dir / "jobs" / name, JOB_JSON)

    assert scan_all(data_dir) == ({}, [])


def test_symlinks_are_never_followed_and_each_is_reported(data_dir: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "secret.csv", b"secret")
    add_job(data_dir)
    write(data_dir / "outputs" / JOB / "causes.csv")
    (data_dir / "outputs" / JOB / "latest.csv").symlink_to("causes.csv")
    (data_dir / "outputs" / JOB / "leak.csv").symlink_to(outside)
    (data_dir / "outputs" / JOB / "linked-dir").symlink_to(outside.parent)
    (data_dir / "outputs" / JOB / "dangling").symlink_to(tmp_path / "nowhere")

    jobs, found = scan_all(data_dir)

    assert [f.file_name for f in jobs[JOB].files] == ["causes.csv"]
    assert found == []  # the job's own problems travel with it
    assert sorted((p.code, p.job_id, p.path) for p in jobs[JOB].problems) == [
        ("symlink_skipped", JOB, f"outputs/{JOB}/{name}")
        for name in ("dangling", "latest.csv", "leak.csv", "linked-dir")
    ]


def test_a_symlinked_job_json_is_not_a_job(data_dir: Path, tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere.json", JOB_JSON)
    (data_dir / "jobs" / f"{JOB}.json").symlink_to(target)

    assert scan_all(data_dir) == ({}, [("symlink_skipped", None, f"jobs/{JOB}.json")])


def test_a_symlinked_job_folder_is_not_followed(data_dir: Path, tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "input.csv")
    add_job(data_dir)
    (data_dir / "uploads" / JOB).symlink_to(tmp_path / "elsewhere")

    jobs, found = scan_all(data_dir)

    assert jobs[JOB].files == ()
    reported = [*found, *((p.code, p.job_id, p.path) for p in jobs[JOB].problems)]
    assert reported == [("symlink_skipped", JOB, f"uploads/{JOB}")]


def _scan_pausing_after_the_first_job(data_dir: Path) -> tuple[JobSource, Iterator[ScanItem]]:
    """A scan of two jobs, stopped after the first: uploads/ and outputs/ are listed by then."""
    items = scan(data_dir)
    first = next(items)
    assert isinstance(first, JobSource)
    return first, items


@pytest.mark.parametrize("folder", ["uploads", "outputs"])
def test_a_job_folder_replaced_by_a_symlink_since_the_listing_is_not_followed(
    data_dir: Path, tmp_path: Path, folder: str
) -> None:
    write(tmp_path / "elsewhere" / "secret.csv")
    for job_id in (JOB, JOB2):
        add_job(data_dir, job_id)
        write(data_dir / folder / job_id / "input.csv")
    first, rest = _scan_pausing_after_the_first_job(data_dir)
    second = JOB2 if first.job_id == JOB else JOB
    shutil.rmtree(data_dir / folder / second)
    (data_dir / folder / second).symlink_to(tmp_path / "elsewhere")

    [source] = list(rest)

    assert isinstance(source, JobSource) and source.job_id == second
    assert source.files == ()
    assert [(p.code, p.path) for p in source.problems] == [
        ("symlink_skipped", f"{folder}/{second}")
    ]


def test_a_job_folder_removed_since_the_listing_is_no_folder_and_no_problem(
    data_dir: Path,
) -> None:
    for job_id in (JOB, JOB2):
        add_job(data_dir, job_id)
        write(data_dir / "outputs" / job_id / "causes.csv")
    first, rest = _scan_pausing_after_the_first_job(data_dir)
    second = JOB2 if first.job_id == JOB else JOB
    shutil.rmtree(data_dir / "outputs" / second)

    [source] = list(rest)

    assert isinstance(source, JobSource) and (source.files, source.problems) == ((), ())


def test_a_job_folder_made_since_the_listing_is_the_next_scans(data_dir: Path) -> None:
    for job_id in (JOB, JOB2):
        add_job(data_dir, job_id)
    first, rest = _scan_pausing_after_the_first_job(data_dir)
    second = JOB2 if first.job_id == JOB else JOB
    write(data_dir / "uploads" / second / "input.csv")

    [source] = list(rest)
    jobs, found = scan_all(data_dir)

    assert isinstance(source, JobSource) and source.files == ()
    assert [f.file_path for f in jobs[second].files] == [f"uploads/{second}/input.csv"]
    assert jobs[second].fingerprint != source.fingerprint  # so the next run writes it again
    assert found == []


@pytest.mark.parametrize("folder", ["jobs", "uploads", "outputs"])
def test_a_symlinked_top_level_folder_is_reported_and_not_followed(
    tmp_path: Path, folder: str
) -> None:
    real = tmp_path / "real"
    add_job(real)
    write(real / "uploads" / JOB / "input.csv")
    write(real / "outputs" / JOB / "causes.csv")
    write(real / "uploads" / ORPHAN / "input.csv")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("jobs", "uploads", "outputs"):
        if name == folder:
            (data_dir / name).symlink_to(real / name)
        else:
            os.rename(real / name, data_dir / name)

    jobs, found = scan_all(data_dir)

    assert ("symlink_skipped", None, folder) in found
    if folder == "jobs":
        assert jobs == {}
    else:
        assert {f.file_path.split("/")[0] for f in jobs[JOB].files} == (
            {"uploads", "outputs"} - {folder}
        )
        assert all(not path.startswith(folder + "/") for _, _, path in found)


def test_a_fifo_named_like_a_job_is_not_a_file_of_that_job_and_never_opened(
    data_dir: Path,
) -> None:
    os.mkfifo(data_dir / "jobs" / f"{JOB}.json")

    assert scan_all(data_dir) == ({}, [("not_a_file", JOB, f"jobs/{JOB}.json")])


def test_a_fifo_among_a_jobs_files_is_skipped_with_a_warning(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "outputs" / JOB / "causes.csv")
    os.mkfifo(data_dir / "outputs" / JOB / "pipe")

    source = only_job(data_dir)

    assert [f.file_name for f in source.files] == ["causes.csv"]
    assert [(p.code, p.path) for p in source.problems] == [
        ("special_file_skipped", f"outputs/{JOB}/pipe")
    ]


# -- what is not a job ----------------------------------------------------------------------


def test_upload_and_output_folders_without_a_job_json_are_orphans(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "uploads" / ORPHAN / "input.csv")
    (data_dir / "outputs" / ORPHAN).mkdir()
    (data_dir / "outputs" / JOB2).mkdir()

    jobs, found = scan_all(data_dir)

    assert list(jobs) == [JOB]
    assert found == [
        ("orphan_output_dir", JOB2, f"outputs/{JOB2}"),
        ("orphan_output_dir", ORPHAN, f"outputs/{ORPHAN}"),
        ("orphan_upload_dir", ORPHAN, f"uploads/{ORPHAN}"),
    ]


def test_the_folder_of_a_symlinked_json_is_an_orphan(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "jobs" / f"{JOB}.json").symlink_to(write(tmp_path / "x.json", JOB_JSON))
    write(data_dir / "outputs" / JOB / "causes.csv")

    _, found = scan_all(data_dir)

    assert found == [
        ("orphan_output_dir", JOB, f"outputs/{JOB}"),
        ("symlink_skipped", None, f"jobs/{JOB}.json"),
    ]


def test_names_that_are_not_uuids_are_invalid_job_dirs(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "jobs" / "backup.json", b"{}")
    write(data_dir / "jobs" / f"{JOB[:-1]}.json", JOB_JSON)
    write(data_dir / "uploads" / "test-001" / "input.csv")
    (data_dir / "outputs" / "scratch").mkdir()

    jobs, found = scan_all(data_dir)

    assert list(jobs) == [JOB]
    assert found == [
        ("invalid_job_dir", None, f"jobs/{JOB[:-1]}.json"),
        ("invalid_job_dir", None, "jobs/backup.json"),
        ("invalid_job_dir", None, "outputs/scratch"),
        ("invalid_job_dir", None, "uploads/test-001"),
    ]


def test_a_uuid_with_a_newline_after_it_is_no_job_id(data_dir: Path) -> None:
    write(data_dir / "jobs" / f"{JOB}\n.json", JOB_JSON)
    (data_dir / "uploads" / f"{JOB2}\n").mkdir()

    jobs, found = scan_all(data_dir)

    assert jobs == {}
    assert found == [
        ("invalid_job_dir", None, f"jobs/{JOB}\\x0a.json"),
        ("invalid_job_dir", None, f"uploads/{JOB2}\\x0a"),
    ]


def test_other_files_are_stray_files(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "demo_configs.json", b"{}")
    (data_dir / "cache").mkdir()
    write(data_dir / "jobs" / "notes.txt")
    write(data_dir / "jobs" / f"{JOB2}.json.bak")
    (data_dir / "jobs" / "archive").mkdir()
    write(data_dir / "uploads" / "input.csv")
    write(data_dir / "outputs" / ORPHAN)  # a file where a folder belongs

    jobs, found = scan_all(data_dir)

    assert list(jobs) == [JOB]
    assert found == [
        ("stray_file", None, "cache"),
        ("stray_file", None, "demo_configs.json"),
        ("stray_file", None, f"jobs/{JOB2}.json.bak"),
        ("stray_file", None, "jobs/archive"),
        ("stray_file", None, "jobs/notes.txt"),
        ("stray_file", None, f"outputs/{ORPHAN}"),
        ("stray_file", None, "uploads/input.csv"),
    ]


def test_a_file_where_a_jobs_folder_belongs_does_not_stop_the_job(data_dir: Path) -> None:
    add_job(data_dir)
    write(data_dir / "uploads" / JOB, b"not a folder")
    write(data_dir / "outputs" / JOB / "causes.csv")

    jobs, found = scan_all(data_dir)

    assert [f.file_name for f in jobs[JOB].files] == ["causes.csv"]
    reported = [*found, *((p.code, p.job_id, p.path) for p in jobs[JOB].problems)]
    assert reported == [("stray_file", JOB, f"uploads/{JOB}")]


def test_a_tree_with_only_a_jobs_folder_is_scanned(tmp_path: Path) -> None:
    add_job(tmp_path / "data")

    jobs, found = scan_all(tmp_path / "data")

    assert list(jobs) == [JOB]
    assert found == []


def test_a_tree_with_only_an_outputs_folder_is_scanned(tmp_path: Path) -> None:
    write(tmp_path / "data" / "outputs" / ORPHAN / "causes.csv")

    assert scan_all(tmp_path / "data") == ({}, [("orphan_output_dir", ORPHAN, f"outputs/{ORPHAN}")])


# -- DATA_DIR itself ------------------------------------------------------------------------


def test_a_missing_data_dir_is_a_data_dir_error(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="no such folder"):
        list(scan(tmp_path / "nope"))


def test_a_file_given_as_data_dir_is_a_data_dir_error(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="not a folder"):
        list(scan(write(tmp_path / "data")))


@pytest.mark.parametrize("content", [[], ["src", "README.md"], ["job"]])
def test_a_folder_without_jobs_uploads_or_outputs_is_a_data_dir_error(
    tmp_path: Path, content: list[str]
) -> None:
    for name in content:
        (tmp_path / name).mkdir()

    with pytest.raises(DataDirError, match="not a legacy data folder"):
        list(scan(tmp_path))


def test_files_named_jobs_uploads_and_outputs_do_not_make_a_data_dir(tmp_path: Path) -> None:
    for name in ("jobs", "uploads", "outputs"):
        write(tmp_path / name)

    with pytest.raises(DataDirError, match="not a legacy data folder"):
        list(scan(tmp_path))


def test_a_data_dir_given_through_a_symlink_is_scanned(data_dir: Path, tmp_path: Path) -> None:
    add_job(data_dir)
    link = tmp_path / "current"
    link.symlink_to(data_dir)

    assert list(scan_all(link)[0]) == [JOB]


# -- fingerprints ---------------------------------------------------------------------------


@pytest.fixture
def job_tree(data_dir: Path) -> Path:
    add_job(data_dir)
    write(data_dir / "uploads" / JOB / "input.csv", b"ID\n1\n")
    write(data_dir / "outputs" / JOB / "causes.csv", b"cause,n\n")
    return data_dir


def test_an_unchanged_tree_gives_the_same_fingerprint(job_tree: Path) -> None:
    first = fingerprint(job_tree)

    assert fingerprint(job_tree) == first
    assert not only_job(job_tree).racy


def test_reading_the_files_does_not_change_the_fingerprint(job_tree: Path) -> None:
    first = fingerprint(job_tree)
    for path in job_tree.rglob("*"):
        if path.is_file():
            path.read_bytes()

    assert fingerprint(job_tree) == first


def test_ignored_files_and_empty_folders_do_not_change_the_fingerprint(job_tree: Path) -> None:
    first = fingerprint(job_tree)
    write(job_tree / "outputs" / JOB / ".DS_Store")
    write(job_tree / "outputs" / JOB / "causes.csv~")
    (job_tree / "outputs" / JOB / "empty").mkdir()

    assert fingerprint(job_tree) == first


def _touch_json(data_dir: Path) -> None:
    os.utime(data_dir / "jobs" / f"{JOB}.json", ns=(OLD_NS, OLD_NS + 1_000))


def _rewrite_json_same_size_and_mtime(data_dir: Path) -> None:
    path = data_dir / "jobs" / f"{JOB}.json"
    replacement = write(data_dir / "jobs" / "new.tmp", JOB_JSON.replace(b"openva", b"OPENVA"))
    os.replace(replacement, path)  # a new inode, as an atomic save makes


def _grow_output(data_dir: Path) -> None:
    write(data_dir / "outputs" / JOB / "causes.csv", b"cause,n\nMalaria,3\n")


def _touch_output(data_dir: Path) -> None:
    os.utime(data_dir / "outputs" / JOB / "causes.csv", ns=(OLD_NS, OLD_NS + 1))


def _add_file(data_dir: Path) -> None:
    write(data_dir / "outputs" / JOB / "nested" / "plot.png")


def _remove_file(data_dir: Path) -> None:
    (data_dir / "uploads" / JOB / "input.csv").unlink()


def _rename_file(data_dir: Path) -> None:
    os.rename(data_dir / "outputs" / JOB / "causes.csv", data_dir / "outputs" / JOB / "c.csv")


def _move_file_to_other_folder(data_dir: Path) -> None:
    os.rename(data_dir / "uploads" / JOB / "input.csv", data_dir / "outputs" / JOB / "input.csv")


@pytest.mark.parametrize(
    "change",
    [
        _touch_json,
        _rewrite_json_same_size_and_mtime,
        _grow_output,
        _touch_output,
        _add_file,
        _remove_file,
        _rename_file,
        _move_file_to_other_folder,
    ],
)
def test_any_change_to_the_json_or_the_files_changes_the_fingerprint(
    job_tree: Path, change: object
) -> None:
    first = fingerprint(job_tree)

    change(job_tree)  # type: ignore[operator]

    assert fingerprint(job_tree) != first


def test_a_file_modified_moments_ago_makes_the_fingerprint_racy(job_tree: Path) -> None:
    os.utime(job_tree / "outputs" / JOB / "causes.csv")  # now

    source = only_job(job_tree)

    assert source.racy
    assert source.fingerprint.startswith("racy-")


# -- job_source and read_job_json -----------------------------------------------------------


def test_job_source_gives_what_the_scan_gives(job_tree: Path) -> None:
    write(job_tree / "outputs" / JOB / "x.csv")
    (job_tree / "outputs" / JOB / "link").symlink_to("x.csv")
    scanned = only_job(job_tree)

    single = job_source(job_tree, JOB)

    assert isinstance(single, JobSource)
    assert (single.fingerprint, single.files, single.problems) == (
        scanned.fingerprint,
        scanned.files,
        scanned.problems,
    )


def test_job_source_of_a_job_whose_json_is_gone_is_none(job_tree: Path) -> None:
    (job_tree / "jobs" / f"{JOB}.json").unlink()

    assert job_source(job_tree, JOB) is None


def test_job_source_of_a_symlinked_json_is_symlink_skipped(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "jobs" / f"{JOB}.json").symlink_to(write(tmp_path / "x.json", JOB_JSON))

    found = job_source(data_dir, JOB)

    assert isinstance(found, Problem)
    assert (found.code, found.path) == ("symlink_skipped", f"jobs/{JOB}.json")


def test_job_source_in_a_symlinked_jobs_folder_is_symlink_skipped(
    data_dir: Path, tmp_path: Path
) -> None:
    add_job(data_dir)
    os.rename(data_dir / "jobs", tmp_path / "jobs")
    (data_dir / "jobs").symlink_to(tmp_path / "jobs")

    found = job_source(data_dir, JOB)

    assert isinstance(found, Problem)
    assert (found.code, found.path) == ("symlink_skipped", "jobs")


def test_job_source_of_a_folder_named_like_a_json_is_not_a_file(data_dir: Path) -> None:
    (data_dir / "jobs" / f"{JOB}.json").mkdir()

    found = job_source(data_dir, JOB)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id, found.path) == ("not_a_file", JOB, f"jobs/{JOB}.json")


def test_read_job_json_returns_the_bytes(job_tree: Path) -> None:
    assert read_job_json(job_tree, only_job(job_tree), max_bytes=1024) == JOB_JSON


def test_a_json_of_exactly_the_limit_is_read(job_tree: Path) -> None:
    assert read_job_json(job_tree, only_job(job_tree), max_bytes=len(JOB_JSON)) == JOB_JSON


def test_a_json_one_byte_over_the_limit_is_file_too_large(job_tree: Path) -> None:
    found = read_job_json(job_tree, only_job(job_tree), max_bytes=len(JOB_JSON) - 1)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id, found.path) == ("file_too_large", JOB, f"jobs/{JOB}.json")


def test_a_json_that_grew_past_the_limit_since_the_scan_is_file_too_large(job_tree: Path) -> None:
    source = only_job(job_tree)
    write(job_tree / "jobs" / f"{JOB}.json", JOB_JSON + b" " * 100)

    found = read_job_json(job_tree, source, max_bytes=len(JOB_JSON) + 10)

    assert isinstance(found, Problem)
    assert found.code == "file_too_large"


def test_a_json_replaced_by_a_fifo_since_the_scan_is_unreadable_without_waiting(
    job_tree: Path,
) -> None:
    source = only_job(job_tree)
    (job_tree / "jobs" / f"{JOB}.json").unlink()
    os.mkfifo(job_tree / "jobs" / f"{JOB}.json")

    found = read_job_json(job_tree, source, max_bytes=1024)

    assert isinstance(found, Problem)
    assert (found.code, found.message) == ("unreadable", "not a regular file")


def test_a_json_replaced_by_a_symlink_since_the_scan_is_unreadable(
    job_tree: Path, tmp_path: Path
) -> None:
    source = only_job(job_tree)
    path = job_tree / "jobs" / f"{JOB}.json"
    os.replace(path, tmp_path / "moved.json")
    path.symlink_to(tmp_path / "moved.json")

    found = read_job_json(job_tree, source, max_bytes=1024)

    assert isinstance(found, Problem)
    assert found.code == "unreadable"


def test_a_json_removed_since_the_scan_is_unreadable(job_tree: Path) -> None:
    source = only_job(job_tree)
    (job_tree / "jobs" / f"{JOB}.json").unlink()

    found = read_job_json(job_tree, source, max_bytes=1024)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id) == ("unreadable", JOB)


# -- permissions (a fake file system, so that they hold even for root) ----------------------

FAKE = Path("/srv/backend/data")


@pytest.fixture
def fake_one_job_tree() -> Iterator[FakeFilesystem]:
    with Patcher(allow_root_user=False) as patcher:
        assert patcher.fs is not None
        for folder in ("jobs", "uploads", "outputs"):
            patcher.fs.create_dir(FAKE / folder)
        patcher.fs.create_file(FAKE / "jobs" / f"{JOB}.json", contents=JOB_JSON.decode())
        patcher.fs.create_file(FAKE / "uploads" / JOB / "input.csv", contents="ID\n1\n")
        patcher.fs.create_file(FAKE / "outputs" / JOB / "sub" / "causes.csv", contents="c\n")
        yield patcher.fs


def test_permissions_are_enforced_in_the_fake_file_system(
    fake_one_job_tree: FakeFilesystem,
) -> None:
    os.chmod(FAKE / "jobs" / f"{JOB}.json", 0)

    with pytest.raises(PermissionError):
        (FAKE / "jobs" / f"{JOB}.json").read_bytes()


def test_the_fake_tree_scans_like_a_real_one(fake_one_job_tree: FakeFilesystem) -> None:
    source = only_job(FAKE)

    assert [f.file_path for f in source.files] == [
        f"uploads/{JOB}/input.csv",
        f"outputs/{JOB}/sub/causes.csv",
    ]
    assert read_job_json(FAKE, source, max_bytes=1024) == JOB_JSON


def test_a_json_without_read_permission_is_unreadable(fake_one_job_tree: FakeFilesystem) -> None:
    os.chmod(FAKE / "jobs" / f"{JOB}.json", 0o200)
    source = only_job(FAKE)

    found = read_job_json(FAKE, source, max_bytes=1024)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id, found.path) == ("unreadable", JOB, f"jobs/{JOB}.json")
    assert "permission denied" in found.message


@pytest.mark.parametrize(
    ("folder", "reported"),
    [
        (f"uploads/{JOB}", f"uploads/{JOB}"),
        (f"outputs/{JOB}", f"outputs/{JOB}"),
        (f"outputs/{JOB}/sub", f"outputs/{JOB}"),
    ],
)
def test_a_job_folder_without_read_permission_makes_the_job_unreadable(
    fake_one_job_tree: FakeFilesystem, folder: str, reported: str
) -> None:
    os.chmod(FAKE / folder, 0o300)

    assert scan_all(FAKE) == ({}, [("unreadable", JOB, reported)])


def test_job_source_of_a_job_with_an_unreadable_folder_is_unreadable(
    fake_one_job_tree: FakeFilesystem,
) -> None:
    os.chmod(FAKE / "outputs" / JOB, 0)

    found = job_source(FAKE, JOB)

    assert isinstance(found, Problem)
    assert (found.code, found.job_id) == ("unreadable", JOB)


def test_other_jobs_are_still_scanned_when_one_is_unreadable(
    fake_one_job_tree: FakeFilesystem,
) -> None:
    fake_one_job_tree.create_file(FAKE / "jobs" / f"{JOB2}.json", contents=JOB_JSON.decode())
    fake_one_job_tree.create_file(FAKE / "outputs" / JOB2 / "causes.csv", contents="c\n")
    os.chmod(FAKE / "outputs" / JOB, 0o300)

    jobs, found = scan_all(FAKE)

    assert list(jobs) == [JOB2]
    assert [code for code, _, _ in found] == ["unreadable"]


@pytest.mark.parametrize("mode", [0, 0o300, 0o600])
def test_an_unreadable_data_dir_is_a_data_dir_error(
    fake_one_job_tree: FakeFilesystem, mode: int
) -> None:
    os.chmod(FAKE, mode)

    with pytest.raises(DataDirError, match="permission denied"):
        list(scan(FAKE))


@pytest.mark.parametrize("folder", ["jobs", "uploads", "outputs"])
def test_an_unreadable_top_level_folder_is_a_data_dir_error(
    fake_one_job_tree: FakeFilesystem, folder: str
) -> None:
    os.chmod(FAKE / folder, 0)

    with pytest.raises(DataDirError, match="permission denied"):
        list(scan(FAKE))


def test_a_read_only_tree_is_scanned_and_read(fake_one_job_tree: FakeFilesystem) -> None:
    for path in [FAKE, *FAKE.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)

    source = only_job(FAKE)

    assert len(source.files) == 2
    assert read_job_json(FAKE, source, max_bytes=1024) == JOB_JSON
    assert stat.S_IMODE(os.stat(FAKE).st_mode) == 0o555


# -- helpers the writers share --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "moment"),
    [
        (0, datetime(1970, 1, 1)),
        (OLD_NS, datetime(2023, 11, 14, 22, 13, 20)),
        (OLD_NS + 123_456_999, datetime(2023, 11, 14, 22, 13, 20, 123456)),
        (-1_000, datetime(1969, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_a_stat_time_becomes_naive_utc_truncated_to_the_microsecond(
    ns: int, moment: datetime
) -> None:
    assert utc_from_ns(ns) == moment


def test_count_job_files_counts_the_jsons_a_scan_would_read(data_dir: Path) -> None:
    add_job(data_dir, JOB)
    add_job(data_dir, JOB2, name=f"{JOB2}.JSON")
    write(data_dir / "jobs" / "backup.json")
    write(data_dir / "jobs" / f".{JOB}.json")
    write(data_dir / "jobs" / f"{JOB}.json.tmp")
    write(data_dir / "jobs" / "notes.txt")

    assert count_job_files(data_dir) == 3


def test_count_job_files_of_a_tree_without_jobs_is_zero(tmp_path: Path) -> None:
    assert count_job_files(tmp_path) == 0
