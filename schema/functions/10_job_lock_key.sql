-- The second half of a job's transaction-level advisory lock key (apply_job() takes
-- (1668115041, job_lock_key(id))): the two-integer form keeps these keys apart from the
-- one-bigint keys of the migrations and of the sync daemons.
CREATE OR REPLACE FUNCTION comsa_migrate.job_lock_key(p_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_id::text) $$;

-- A job's advisory lock, held to the end of the caller's transaction: every write of a job
-- (apply_job(), record_stored_files()) takes it first, so that two writers of one job
-- wait for each other. 1668115041 is 'cmja' (comsa-migrate job apply) read as a 32-bit
-- integer.
CREATE OR REPLACE FUNCTION comsa_migrate.lock_job(p_id uuid) RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(1668115041, comsa_migrate.job_lock_key(p_id)) $$;
