"""How a run writes, for every use (backfill, report, sync): one options object, its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from comsa_migrate.core.payload import WriteSettings
from comsa_migrate.core.plan import Reading
from comsa_migrate.core.uploads import DEFAULT_INLINE_INPUT_BYTES, DEFAULT_MAX_INPUT_BYTES
from comsa_migrate.db.faults import DEFAULT_LIMITS, Limits
from comsa_migrate.db.writes import write_settings

__all__ = [
    "BackfillOptions",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONNECTIONS",
    "DEFAULT_MAX_JSON_BYTES",
    "DEFAULT_PATH_PREFIX",
    "WriteOptions",
]

DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_SIZE = 200
#: the dashboard runs in backend/ and writes every path as data/...
DEFAULT_PATH_PREFIX = "data/"
#: writer connections of a run (--jobs), when it is given a way to open them
DEFAULT_CONNECTIONS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOptions:
    """How jobs are read and written: the one place for a write option of every use.

    The backfill, the report (which plans the backfill's writes) and the sync daemon each
    carry one, as their ``write`` field.
    """

    force: bool = False  # overwrite rows changed by something else; trust no fingerprint
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES  # larger job JSONs are skipped
    batch_size: int = DEFAULT_BATCH_SIZE  # jobs sent per round trip
    #: DATA_DIR as the dashboard's working folder (backend/) sees it; "" for DATA_DIR itself
    path_prefix: str = DEFAULT_PATH_PREFIX
    input_content: bool = True  # copy uploads into job_input_files, where it exists
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    #: larger uploads are not carried inside their job's payload but streamed apart
    inline_input_bytes: int = DEFAULT_INLINE_INPUT_BYTES
    owner: str | None = None  # e-mail of the dashboard user given the jobs nobody owns
    #: writer connections; more than one needs a way to open them (``connect``)
    connections: int = DEFAULT_CONNECTIONS
    limits: Limits = DEFAULT_LIMITS  # the tool's own limits, whatever the role's are
    #: --file-store: where the contents of the jobs' files are kept (file_store/), or None
    file_store: str | None = None

    def settings(self, conn: psycopg.Connection[Any] | None) -> WriteSettings:
        """How this run writes to ``conn`` (None: no database); ConfigurationError for an
        --owner not found. Computed once per run (or per rescan of the daemon)."""
        return write_settings(
            conn,
            self.path_prefix,
            input_content=self.input_content,
            max_input_bytes=self.max_input_bytes,
            owner=self.owner,
            inline_input_bytes=self.inline_input_bytes,
            file_store=self.file_store,
        )

    def reading(self, data_dir: Path, settings: WriteSettings) -> Reading:
        """How the jobs under ``data_dir`` are read for a run with these settings."""
        return Reading(data_dir, self.max_json_bytes, settings, self.force)


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    """A backfill of ``data_dir``, and the report that plans one (comsa_migrate.backfill
    and comsa_migrate.report take it)."""

    data_dir: Path
    write: WriteOptions = WriteOptions()
    #: processes that scan the job JSONs (forked; see core/scan_workers.py); with one, the
    #: scan runs in this process and nothing is forked
    scan_processes: int = 1
