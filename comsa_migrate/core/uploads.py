"""A job's uploads as the dashboard's job_input_files holds them: base name and base64 bytes."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from comsa_migrate.core.layout import JobSource
from comsa_migrate.problems import Problem

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "input_contents"]

#: uploads larger than this are not copied into job_input_files (--max-input-bytes)
DEFAULT_MAX_INPUT_BYTES = 50 * 1024 * 1024


def input_contents(
    data_dir: Path, source: JobSource, max_bytes: int
) -> tuple[list[tuple[str, str]], list[Problem]]:
    """[(file name, base64 content)] of the job's files under uploads/<id>/, and problems.

    job_input_files keys uploads by base name, as the dashboard restores them into
    uploads/<id>/<name>: of two uploads with one base name in different subfolders, the
    one nearest the top is kept (then the first by path). A file over ``max_bytes`` is
    left out with a warning, and still keeps its name from the others. One that cannot
    be read stops the job (``unreadable``): no half-mirrored upload reaches the database.
    """
    claimed: dict[str, str] = {}  # base name -> the upload that has it (nearest the top)
    chosen: dict[str, str] = {}  # base name -> path relative to DATA_DIR, to be stored
    problems: list[Problem] = []
    uploads = [f for f in source.files if f.file_type == "input"]
    for f in sorted(uploads, key=lambda f: (f.file_path.count("/"), f.file_path)):
        kept = claimed.setdefault(f.file_name, f.file_path)
        if kept != f.file_path:
            message = f"another upload of this job has this name; job_input_files keeps {kept}"
            problems.append(Problem("duplicate_input_name", message, source.job_id, f.file_path))
        elif f.size > max_bytes:
            problems.append(
                Problem(
                    "input_too_large",
                    f"{f.size} bytes is over the limit of {max_bytes} (--max-input-bytes); "
                    "not stored in job_input_files",
                    source.job_id,
                    f.file_path,
                )
            )
        else:
            chosen[f.file_name] = f.file_path
    contents: list[tuple[str, str]] = []
    for name, rel in sorted(chosen.items()):
        try:
            # never follow a symbolic link, nor wait on a FIFO, put there since the scan
            fd = os.open(os.path.join(data_dir, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                contents.append((name, base64.b64encode(fh.read()).decode("ascii")))
        except OSError as exc:
            reason = exc.strerror.lower() if exc.strerror else str(exc)
            problems.append(Problem("unreadable", reason, source.job_id, rel))
    return contents, problems
