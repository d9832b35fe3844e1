"""sync --file-store db: the daemon keeps files as they appear or change, the pod's own
jobs included (whose rows are the dashboard's, and stay untouched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .file_store_helpers import (
    content_of,
    dashboard_row,
    digest,
    insert_dashboard_job,
    stored_rows,
    write_sidecar,
)
from .helpers import job_row, new_job_id, running_daemon, wait_until, write_job_atomically

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def _row_of(dsn: str, path: str) -> tuple[str, int, bool] | None:
    return stored_rows(dsn).get(path)


def test_the_pods_own_job_keeps_its_outputs_and_sidecar_and_its_row_is_untouched(
    dsn: str, data: Path
) -> None:
    job_id = new_job_id()
    insert_dashboard_job(dsn, job_id)  # the dashboard's job: its row, no JSON of a job
    row = dashboard_row(dsn, job_id)
    with running_daemon(dsn, data, file_store="db"):  # a pod's empty data/
        sidecar = write_sidecar(data, job_id)
        (data / "outputs" / job_id).mkdir()
        (data / "outputs" / job_id / "causes.csv").write_text("cause,n\nsepsis,3\n")

        causes = wait_until(
            lambda: _row_of(dsn, f"outputs/{job_id}/causes.csv"), what="the output kept"
        )
        kept_sidecar = wait_until(lambda: _row_of(dsn, f"jobs/{job_id}.json"), what="sidecar")

    assert content_of(dsn, causes[0]) == b"cause,n\nsepsis,3\n"
    assert content_of(dsn, kept_sidecar[0]) == sidecar.read_bytes()
    assert dashboard_row(dsn, job_id) == row


def test_a_file_changed_under_the_daemon_is_stored_again_and_a_removed_one_kept(
    dsn: str, data: Path
) -> None:
    job_id = new_job_id()
    write_job_atomically(data, job_id)
    outputs = data / "outputs" / job_id
    outputs.mkdir()
    (outputs / "causes.csv").write_text("first")
    (outputs / "plot.png").write_bytes(b"png")
    with running_daemon(dsn, data, file_store="db"):
        assert job_row(dsn, job_id) is not None
        assert _row_of(dsn, f"outputs/{job_id}/causes.csv") == (digest(b"first"), 5, True)

        (outputs / "causes.csv").write_text("second")
        (outputs / "plot.png").unlink()

        wait_until(
            lambda: _row_of(dsn, f"outputs/{job_id}/causes.csv") == (digest(b"second"), 6, True),
            what="the new content",
        )
        plot = wait_until(
            lambda: _row_of(dsn, f"outputs/{job_id}/plot.png") == (digest(b"png"), 3, False),
            what="the removed file marked off disk",
        )

    assert plot
    assert content_of(dsn, digest(b"png")) == b"png"


def test_without_a_store_the_daemon_keeps_nothing_and_writes_no_sidecar(
    dsn: str, data: Path
) -> None:
    job_id = new_job_id()
    insert_dashboard_job(dsn, job_id)
    write_sidecar(data, job_id)
    with running_daemon(dsn, data):
        other = new_job_id()
        write_job_atomically(data, other)
        wait_until(lambda: job_row(dsn, other), what="the legacy job's row")

    assert stored_rows(dsn) == {}


def test_the_daemon_keeps_the_files_of_a_job_it_skips_for_its_json(dsn: str, data: Path) -> None:
    job_id = new_job_id()
    with running_daemon(dsn, data, file_store="db"):
        (data / "outputs" / job_id).mkdir()
        (data / "outputs" / job_id / "causes.csv").write_text("cause,n\nsepsis,3\n")
        (data / "jobs" / f"{job_id}.json").write_text('["not", "a", "job"]')

        causes = wait_until(
            lambda: _row_of(dsn, f"outputs/{job_id}/causes.csv"), what="the output kept"
        )
        kept_json = wait_until(lambda: _row_of(dsn, f"jobs/{job_id}.json"), what="its JSON")

    assert content_of(dsn, causes[0]) == b"cause,n\nsepsis,3\n"
    assert content_of(dsn, kept_json[0]) == b'["not", "a", "job"]'
    assert job_row(dsn, job_id) is None
