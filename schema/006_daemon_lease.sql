-- One sync daemon per database and name, wherever its connections go: a lease in a table.
--
-- Until now a daemon held a session advisory lock keyed on its name. A pooler in
-- transaction mode (PgBouncer) hands each transaction whichever server connection is
-- free, so such a lock landed on a connection other clients then used, and a second
-- daemon of the same name could start. A lease is a row: taken with one statement
-- (INSERT ... ON CONFLICT ... WHERE expired, or its own), renewed while the daemon runs,
-- deleted when it stops. A holder that dies without deleting it is waited out until
-- expires_at, the server's clock; on its own host, a holder whose process is gone is
-- taken over at once (pid, and the process's start time so that a reused pid is not
-- taken for it, within one boot and pid namespace: host_scope).
CREATE TABLE comsa_migrate.daemon_leases (
    name TEXT PRIMARY KEY,
    -- a random id of the holding process, drawn at its start
    token UUID NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    -- the process's start, in clock ticks after boot (Linux /proc/<pid>/stat); NULL elsewhere
    pid_start BIGINT,
    -- where pid names one process: the boot id and the pid namespace; NULL where unknown
    host_scope TEXT,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    renewed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
