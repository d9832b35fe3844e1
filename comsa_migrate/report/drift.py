"""The report's drift check: the database's jobs against the tree and against what was written."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from comsa_migrate.core.layout import JobSource
from comsa_migrate.problems import Problem

__all__ = ["DriftInput", "check_drift"]

#: every job in the database, whether its rows still digest to what comsa-migrate wrote,
#: and its job_files paths and sizes; streamed through a server-side cursor
_JOBS_WITH_STATE = """
SELECT j.id::text,
       s.job_id IS NOT NULL
           AND md5(comsa_migrate.stored_content(j.id)::text) <> s.content_digest,
       (SELECT jsonb_agg(jsonb_build_array(f.file_path, f.file_size))
        FROM public.job_files f WHERE f.job_id = j.id)
FROM public.jobs j
LEFT JOIN comsa_migrate.job_state s ON s.job_id = j.id
"""
#: the same without the bookkeeping tables: nothing is known to be written by the tool
_JOBS_WITHOUT_STATE = """
SELECT j.id::text,
       false,
       (SELECT jsonb_agg(jsonb_build_array(f.file_path, f.file_size))
        FROM public.job_files f WHERE f.job_id = j.id)
FROM public.jobs j
"""
#: of the changed jobs given as {job id: {file path: size on disk}}, those whose rows
#: digest to what was written once those file sizes are put back: only sizes changed
_EXPLAINED_BY_SIZES = """
SELECT x.key
FROM jsonb_each(%s::jsonb) AS x(key, sizes)
JOIN comsa_migrate.job_state s ON s.job_id = x.key::uuid
CROSS JOIN LATERAL (SELECT comsa_migrate.stored_content(x.key::uuid) AS c) AS stored
WHERE md5(jsonb_set(stored.c, '{files}', COALESCE((
          SELECT jsonb_agg(CASE WHEN x.sizes ? (e.v->>2)
                                THEN jsonb_set(e.v, '{3}', x.sizes->(e.v->>2))
                                ELSE e.v END ORDER BY e.n)
          FROM jsonb_array_elements(stored.c->'files') WITH ORDINALITY AS e(v, n)), '[]'))::text)
      = s.content_digest
"""
_STREAM_ROWS = 2000


@dataclass(frozen=True, slots=True)
class DriftInput:
    """What the drift check needs from the scan, and where it records what it finds."""

    data_dir: Path
    sources: dict[str, JobSource]  # job id -> what the scan saw, for each job JSON
    json_on_disk: set[str]  # job ids whose JSON exists (read or not)
    actions: dict[str, str]  # job id -> what the next backfill does with it
    add: Callable[[Problem], None]
    path_prefix: str = ""  # what job_files paths start with (--path-prefix)


def check_drift(conn: psycopg.Connection[Any], seen: DriftInput, *, with_state: bool) -> None:
    """Compare every job in the database with the tree; read-only, one pass over `jobs`.

    Reports db_only, file_missing and size_mismatch, and (``with_state``) db_changed.
    A job whose only change is a file size that size_mismatch already reports is not
    reported again as db_changed.
    """
    changed: dict[str, dict[str, int]] = {}  # job id -> {path: size on disk} of its mismatches
    with conn.cursor(name="comsa_migrate_report_drift") as cursor:
        cursor.itersize = _STREAM_ROWS
        cursor.execute(_JOBS_WITH_STATE if with_state else _JOBS_WITHOUT_STATE)
        for job_id, rows_changed, files in cursor:
            mismatched = _check_files(seen, job_id, files or [])
            if job_id not in seen.json_on_disk:
                seen.add(
                    Problem(
                        "db_only",
                        f"in the database, but jobs/{job_id}.json is not on disk; "
                        "the backfill leaves it alone",
                        job_id,
                    )
                )
            elif rows_changed:
                changed[job_id] = mismatched
    explained = _explained_by_sizes(conn, {j: m for j, m in changed.items() if m})
    for job_id in changed.keys() - explained:
        seen.add(Problem("db_changed", _changed_message(seen.actions.get(job_id)), job_id))


def _check_files(seen: DriftInput, job_id: str, files: list[list[Any]]) -> dict[str, int]:
    """file_missing and size_mismatch for one job's rows; returns {stored path: size on disk}.

    A stored path under --path-prefix names the file at the rest of it under DATA_DIR.
    """
    source = seen.sources.get(job_id)
    on_disk = {f.file_path: f.size for f in source.files} if source else {}
    mismatched: dict[str, int] = {}
    prefix = seen.path_prefix
    for stored_path, size in files:
        path = stored_path[len(prefix) :] if stored_path.startswith(prefix) else stored_path
        if path in on_disk:
            if size is not None and size != on_disk[path]:
                mismatched[stored_path] = on_disk[path]
                seen.add(
                    Problem(
                        "size_mismatch",
                        f"job_files says {_bytes(size)}; "
                        f"the file on disk has {_bytes(on_disk[path])}",
                        job_id,
                        path,
                    )
                )
        elif not os.path.lexists(seen.data_dir / path):
            seen.add(Problem("file_missing", "job_files names a file that is gone", job_id, path))
    return mismatched


def _explained_by_sizes(
    conn: psycopg.Connection[Any], sizes: dict[str, dict[str, int]]
) -> set[str]:
    if not sizes:
        return set()
    rows = conn.execute(_EXPLAINED_BY_SIZES, [Jsonb(sizes)]).fetchall()
    return {job_id for (job_id,) in rows}


def _changed_message(action: str | None) -> str:
    changed = "the rows were changed since comsa-migrate wrote them"
    if action == "conflict":
        return f"{changed}, and the file changed too: a conflict (--force overwrites)"
    if action == "update":
        return f"{changed}; --force overwrites them"
    return f"{changed}; the next backfill leaves them alone"


def _bytes(n: int) -> str:
    """A size as a problem's message gives it: "1 byte", "1,204 bytes"."""
    return f"{n:,} byte" if n == 1 else f"{n:,} bytes"
