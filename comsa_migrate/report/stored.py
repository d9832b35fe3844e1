"""The report's check of the file store: every stored file's content there and whole, and
the disk compared with what was stored. Reads only."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.file_store.keeping import store_on
from comsa_migrate.report.result import StoreCheck, StoredFinding

__all__ = ["check_file_store"]

_ROWS = (
    "SELECT job_id::text, path, sha256, size, mtime_ns, on_disk"
    " FROM comsa_migrate.stored_files ORDER BY job_id, path"
)


def check_file_store(
    conn: psycopg.Connection[Any], url: str, data_dir: Path, stop: threading.Event | None = None
) -> StoreCheck:
    """What the store ``url`` holds, checked against comsa_migrate.stored_files on ``conn``
    (idle, autocommit) and the files under ``data_dir``.

    Each content a row names is read back and hashed once, in chunks (a content missing
    or other than its sha256 is an error); each file on disk is compared by stat with its
    row (changed since it was stored: the next run stores it again; removed: its last
    content is kept, as the row says). Raises FileStoreError when the store cannot be read.
    """
    store = store_on(url, conn)
    held = dict(store.contents())
    rows = conn.execute(_ROWS).fetchall()
    named = {row[2] for row in rows}
    findings: list[StoredFinding] = []
    corrupt: set[str] = set()
    verified = 0
    for sha in sorted(named & held.keys()):
        if stop is not None and stop.is_set():
            break
        if not _whole(store.read(sha), sha, held[sha]):
            corrupt.add(sha)
        verified += 1
    not_on_disk = 0
    for job_id, path, sha, size, mtime_ns, on_disk in rows:
        if sha not in held:
            findings.append(StoredFinding("stored_content_missing", job_id, path, sha))
        elif sha in corrupt:
            findings.append(StoredFinding("stored_content_corrupt", job_id, path, sha))
        if not on_disk:
            not_on_disk += 1
            continue
        try:
            st = os.lstat(data_dir / path)
        except FileNotFoundError:
            findings.append(StoredFinding("removed_since_stored", job_id, path, sha))
            continue
        except OSError:
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            findings.append(StoredFinding("changed_since_stored", job_id, path, sha))
    unnamed = {sha: size for sha, size in held.items() if sha not in named}
    return StoreCheck(
        url=url,
        contents=len(held),
        bytes=sum(held.values()),
        files=len(rows),
        not_on_disk=not_on_disk,
        unnamed=len(unnamed),
        unnamed_bytes=sum(unnamed.values()),
        verified=verified,
        findings=tuple(findings),
    )


def _whole(chunks: Any, sha256: str, size: int) -> bool:
    digest = hashlib.sha256()
    length = 0
    try:
        for chunk in chunks:
            digest.update(chunk)
            length += len(chunk)
    except KeyError:  # gone since it was listed
        return False
    return length == size and digest.hexdigest() == sha256
