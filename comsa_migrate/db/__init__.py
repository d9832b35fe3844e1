"""Which database: DSN and the embedded server, migrations and their SQL, roles' rights."""
