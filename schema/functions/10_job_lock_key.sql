-- The second half of a job's transaction-level advisory lock key (apply_job() takes
-- (1668115041, job_lock_key(id))): the two-integer form keeps these keys apart from the
-- one-bigint keys of the migrations and of the sync daemons.
CREATE OR REPLACE FUNCTION comsa_migrate.job_lock_key(p_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_id::text) $$;
