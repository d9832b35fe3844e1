-- One writer per job at a time, wherever the writers run (two backfills, a backfill
-- and a daemon, daemons on several hosts), and daemons named apart.

-- apply_job() takes a transaction-level advisory lock on the job's id before it plans
-- (functions/40_apply_job.sql): a second writer of the same job waits for the first to
-- commit, then plans against what the first wrote and finds the job unchanged instead of
-- inserting its logs and files a second time.

-- A daemon's name (by default its host name and the real path of its data folder)
-- keys its session lock, so that two pods with their own backend/data at the same path
-- do not lock each other out. Daemons recorded before names existed get the default.
ALTER TABLE comsa_migrate.daemons ADD COLUMN name TEXT;
UPDATE comsa_migrate.daemons SET name = hostname || ':' || data_dir;
ALTER TABLE comsa_migrate.daemons ALTER COLUMN name SET NOT NULL;
