"""SQL migrations of comsa-migrate, installed as comsa_migrate.sql, applied in name order."""
