-- The sync daemon's bookkeeping, read by `comsa-migrate status`: one row per daemon
-- process, refreshed by its heartbeat, and the problems it met.

CREATE TABLE comsa_migrate.daemons (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT REFERENCES comsa_migrate.runs (id) ON DELETE SET NULL,
    data_dir TEXT NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    -- starting, catching_up, watching, tree_missing or stopped
    state TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at TIMESTAMPTZ,
    last_sync_at TIMESTAMPTZ,
    last_job_id UUID,
    last_action TEXT,
    -- from the first file event of the last job synced to its commit
    last_lag_ms INTEGER,
    queue_depth INTEGER NOT NULL DEFAULT 0,
    -- when the oldest job still waiting to be synced was first seen changing
    oldest_pending_at TIMESTAMPTZ,
    -- jobs by action since the daemon started: {"insert": n, "update": n, ...}
    actions JSONB NOT NULL DEFAULT '{}',
    -- rescans, database outages, observer restarts, errors
    counters JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX daemons_started_at_idx ON comsa_migrate.daemons (started_at DESC);

CREATE TABLE comsa_migrate.daemon_problems (
    id BIGSERIAL PRIMARY KEY,
    daemon_id BIGINT NOT NULL REFERENCES comsa_migrate.daemons (id) ON DELETE CASCADE,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    severity TEXT NOT NULL,
    code TEXT NOT NULL,
    job_id TEXT,
    path TEXT,
    message TEXT NOT NULL
);

CREATE INDEX daemon_problems_seen_at_idx ON comsa_migrate.daemon_problems (seen_at DESC);
