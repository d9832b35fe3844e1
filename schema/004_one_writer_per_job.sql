-- One writer per job at a time, wherever the writers run (two backfills, a backfill
-- and a daemon, daemons on several hosts), and daemons named apart.

-- apply_job() takes a transaction-level advisory lock on the job's id before it plans
-- (schema/005 redefines it with the lock as its first statement): a second writer of the
-- same job waits for the first to commit, then plans against what the first wrote and
-- finds the job unchanged instead of inserting its logs and files a second time. The
-- lock goes with the job's own transaction (apply_jobs() commits after each job), so a
-- writer holds at most one. Its key is (1668115041, job_lock_key(id)): the two-integer
-- form keeps these keys apart from the one-bigint keys of the migrations and of the sync
-- daemons.
CREATE OR REPLACE FUNCTION comsa_migrate.job_lock_key(p_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_id::text) $$;

-- A daemon's name (by default its host name and the real path of its data folder)
-- keys its session lock, so that two pods with their own backend/data at the same path
-- do not lock each other out. Daemons recorded before names existed get the default.
ALTER TABLE comsa_migrate.daemons ADD COLUMN name TEXT;
UPDATE comsa_migrate.daemons SET name = hostname || ':' || data_dir;
ALTER TABLE comsa_migrate.daemons ALTER COLUMN name SET NOT NULL;
