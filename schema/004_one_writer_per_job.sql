-- One writer per job at a time, wherever the writers run (two backfills, a backfill
-- and a daemon, daemons on several hosts), and daemons named apart.

-- apply_job() as in 002, but it first takes a transaction-level advisory lock on the
-- job's id and only then plans. A second writer of the same job waits for the first
-- to commit, then plans against what the first wrote: it finds the job unchanged
-- instead of inserting its logs and files a second time. The lock goes with the job's
-- own transaction (apply_jobs() commits after each job), so a writer holds at most one.
-- The two-integer form keeps these keys apart from the one-bigint keys of the
-- migrations and of the sync daemons.
CREATE OR REPLACE FUNCTION comsa_migrate.job_lock_key(p_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(p_id::text) $$;

CREATE OR REPLACE FUNCTION comsa_migrate.apply_job(job jsonb, force boolean, p_run_id bigint)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    plan record;
    v_job_id uuid := (job->>'id')::uuid;
    n_jobs int := 0;
    n_logs int := 0;
    n_files int := 0;
BEGIN
    -- 1668115041 is 'cmja' (comsa-migrate job apply) read as a 32-bit integer
    PERFORM pg_advisory_xact_lock(1668115041, comsa_migrate.job_lock_key(v_job_id));
    -- a statement of its own after the lock: under READ COMMITTED it sees every commit
    -- made before the lock was granted
    plan := comsa_migrate.plan_job(job, force);
    IF plan.action IN ('insert', 'update') THEN
        IF plan.stored IS NULL OR plan.stored->'job' <> plan.incoming->'job' THEN
            INSERT INTO public.jobs
            SELECT r.* FROM jsonb_populate_record(NULL::public.jobs, job) AS r
            ON CONFLICT (id) DO UPDATE SET
                type = EXCLUDED.type, status = EXCLUDED.status,
                algorithm = EXCLUDED.algorithm, age_group = EXCLUDED.age_group,
                country = EXCLUDED.country, calib_model_type = EXCLUDED.calib_model_type,
                ensemble = EXCLUDED.ensemble, created_at = EXCLUDED.created_at,
                started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
                error = EXCLUDED.error, result = EXCLUDED.result,
                input_file_path = EXCLUDED.input_file_path;
            n_jobs := 1;
        END IF;
        IF plan.stored IS NULL OR plan.stored->'logs' <> plan.incoming->'logs' THEN
            IF plan.stored IS NOT NULL THEN
                DELETE FROM public.job_logs l WHERE l.job_id = v_job_id;
            END IF;
            INSERT INTO public.job_logs (job_id, timestamp, message)
            SELECT v_job_id, (e.v->>0)::timestamp, e.v->>1
            FROM jsonb_array_elements(job->'logs') WITH ORDINALITY AS e(v, n) ORDER BY e.n;
            GET DIAGNOSTICS n_logs = ROW_COUNT;
        END IF;
        IF plan.stored IS NULL OR plan.stored->'files' <> plan.incoming->'files' THEN
            IF plan.stored IS NOT NULL THEN
                DELETE FROM public.job_files f WHERE f.job_id = v_job_id;
            END IF;
            INSERT INTO public.job_files
                (job_id, file_type, file_name, file_path, file_size, created_at)
            SELECT v_job_id, e.v->>0, e.v->>1, e.v->>2, (e.v->>3)::bigint,
                   (e.v->>4)::timestamp
            FROM jsonb_array_elements(job->'files') AS e(v);
            GET DIAGNOSTICS n_files = ROW_COUNT;
        END IF;
    END IF;
    IF plan.action <> 'conflict' THEN
        INSERT INTO comsa_migrate.job_state AS s
            (job_id, fingerprint, content_digest, source_path, run_id)
        VALUES (v_job_id, job->>'fingerprint', md5(plan.incoming::text),
                job->>'source_path', p_run_id)
        ON CONFLICT (job_id) DO UPDATE SET
            fingerprint = EXCLUDED.fingerprint, content_digest = EXCLUDED.content_digest,
            source_path = EXCLUDED.source_path, written_at = now(), run_id = EXCLUDED.run_id;
    END IF;
    RETURN jsonb_build_object('action', plan.action, 'jobs', n_jobs,
                              'job_logs', n_logs, 'job_files', n_files);
END
$$;

-- A daemon's name (by default its host name and the real path of its data folder)
-- keys its session lock, so that two pods with their own backend/data at the same path
-- do not lock each other out. Daemons recorded before names existed get the default.
ALTER TABLE comsa_migrate.daemons ADD COLUMN name TEXT;
UPDATE comsa_migrate.daemons SET name = hostname || ':' || data_dir;
ALTER TABLE comsa_migrate.daemons ALTER COLUMN name SET NOT NULL;
