"""The sync daemon's options, and the backfill's options of how it writes rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comsa_migrate.core.backfill import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_PATH_PREFIX,
    DEFAULT_WRITERS,
    BackfillOptions,
)
from comsa_migrate.core.uploads import DEFAULT_MAX_INPUT_BYTES
from comsa_migrate.db.faults import DEFAULT_LIMITS, Limits
from comsa_migrate.sync.lock import LEASE_TTL_S

__all__ = ["SyncOptions"]


@dataclass(frozen=True, slots=True)
class SyncOptions:
    data_dir: Path
    #: names the daemon in `status` and keys its lock; None: host name and real path
    name: str | None = None
    force: bool = False
    wait: bool = False  # wait for the lock instead of refusing to start
    polling: bool = False  # the polling observer, for NFS and CIFS
    debounce: float = 0.5  # seconds of quiet before a job is synced
    settle: float = 5.0  # seconds a job JSON may stay unparsable before it is a problem
    rescan_interval: float = 600.0
    metrics_port: int | None = None  # 0 picks a free port
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    batch_size: int = DEFAULT_BATCH_SIZE
    path_prefix: str = DEFAULT_PATH_PREFIX  # the BackfillOptions of how rows are written
    input_content: bool = True
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    owner: str | None = None
    writers: int = DEFAULT_WRITERS  # writer connections of the catch-up and the rescans (--jobs)
    limits: Limits = DEFAULT_LIMITS  # the tool's own limits for its own transactions
    retry_min: float = 0.5  # database reconnection backoff
    retry_max: float = 30.0
    heartbeat_interval: float = 5.0  # bookkeeping refresh and observer health check
    #: seconds the daemon's lease lasts unless renewed (each heartbeat renews it)
    lease_ttl: float = LEASE_TTL_S
    #: the tree counts as gone when fewer than this fraction of its job JSONs remain...
    vanish_fraction: float = 0.5
    #: ...out of at least this many
    vanish_min_jobs: int = 20
    file_store: str | None = None  # --file-store: where the files' contents are kept

    def writing(self, root: Path) -> BackfillOptions:
        """How the daemon writes rows, as the backfill does, for DATA_DIR at ``root``."""
        return BackfillOptions(
            root,
            self.force,
            self.max_json_bytes,
            self.batch_size,
            path_prefix=self.path_prefix,
            input_content=self.input_content,
            max_input_bytes=self.max_input_bytes,
            owner=self.owner,
            writers=self.writers,
            limits=self.limits,
            file_store=self.file_store,
        )
