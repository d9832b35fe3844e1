"""The sync daemon's options; how it writes rows is the WriteOptions every use shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comsa_migrate.pipeline.options import WriteOptions
from comsa_migrate.sync.lock import LEASE_TTL_S

__all__ = ["SyncOptions"]


@dataclass(frozen=True, slots=True)
class SyncOptions:
    data_dir: Path
    #: names the daemon in `status` and keys its lock; None: host name and real path
    name: str | None = None
    wait: bool = False  # wait for the lock instead of refusing to start
    polling: bool = False  # the polling observer, for NFS and CIFS
    debounce: float = 0.5  # seconds of quiet before a job is synced
    #: seconds a job JSON may stay unparsable (being written) before it is a problem
    unparsable_grace: float = 5.0
    rescan_interval: float = 600.0
    metrics_port: int | None = None  # 0 picks a free port
    #: how rows are written, as the backfill writes them; ``write.connections`` writer
    #: connections for the catch-up and the rescans (--jobs)
    write: WriteOptions = WriteOptions()
    #: processes that scan the job JSONs of the catch-up and the rescans (--jobs)
    scan_processes: int = 1
    retry_min: float = 0.5  # the backoff of a database's (or an object store's) outage
    retry_max: float = 30.0
    heartbeat_interval: float = 5.0  # bookkeeping refresh and observer health check
    #: seconds the daemon's lease lasts unless renewed (each heartbeat renews it)
    lease_ttl: float = LEASE_TTL_S
    #: the tree counts as gone when fewer than this fraction of its job JSONs remain...
    vanish_fraction: float = 0.5
    #: ...out of at least this many
    vanish_min_jobs: int = 20
