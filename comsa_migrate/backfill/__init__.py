"""The backfill use: scan the legacy tree and write every job, one transaction per job."""

from comsa_migrate.backfill.run import BackfillOptions, backfill

__all__ = ["BackfillOptions", "backfill"]
