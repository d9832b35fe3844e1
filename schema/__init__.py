"""SQL migrations of comsa-migrate, installed as the package comsa_migrate.sql and applied in file-name order."""
