-- comsa-migrate's own bookkeeping, kept apart from the dashboard's tables in schema
-- comsa_migrate: what the tool last wrote for each job, and its runs. The server-side
-- functions that write one job in one transaction are in functions/.

CREATE TABLE comsa_migrate.runs (
    id BIGSERIAL PRIMARY KEY,
    command TEXT NOT NULL,
    data_dir TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    outcome TEXT,
    totals JSONB NOT NULL DEFAULT '{}'
);

-- One row per job the tool wrote: the stat fingerprint of its files on disk and a
-- digest of the rows it left in the database. A digest that no longer matches the
-- rows means something else changed them since.
CREATE TABLE comsa_migrate.job_state (
    job_id UUID PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    content_digest TEXT NOT NULL,
    source_path TEXT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    run_id BIGINT REFERENCES comsa_migrate.runs (id) ON DELETE SET NULL
);
