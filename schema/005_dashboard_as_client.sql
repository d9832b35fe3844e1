-- The dashboard as the client: compare only what comsa-migrate writes, give migrated jobs
-- an owner, and mirror uploads into the dashboard's job_input_files.

-- The columns of `jobs` that comsa-migrate writes: those of 001. A column the dashboard
-- added later (user_id, from its 002_users) is the dashboard's, never a change. Named one
-- by one, in a plain expression that the planner inlines: no per-key loop for each job.
CREATE FUNCTION comsa_migrate.written_job(r public.jobs) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'type', r.type, 'status', r.status, 'algorithm', r.algorithm,
        'age_group', r.age_group, 'country', r.country,
        'calib_model_type', r.calib_model_type, 'ensemble', r.ensemble,
        'created_at', r.created_at, 'started_at', r.started_at,
        'completed_at', r.completed_at, 'error', r.error, 'result', r.result,
        'input_file_path', r.input_file_path)
$$;

-- Before stored_content() changes, bring each job's digest to the new form wherever it
-- still described the rows: as they are now, or as they were before the dashboard set a
-- column of its own (user_id) that was NULL when comsa-migrate wrote them. Digests that
-- match neither were changed by something else, and stay so.
CREATE TEMPORARY TABLE still_as_written ON COMMIT DROP AS
SELECT s.job_id
FROM comsa_migrate.job_state s
CROSS JOIN LATERAL (SELECT comsa_migrate.stored_content(s.job_id) AS c) AS old
WHERE old.c IS NOT NULL
  AND s.content_digest IN (
      md5(old.c::text),
      md5(jsonb_set(old.c, '{job}',
                    (old.c->'job') || (SELECT COALESCE(jsonb_object_agg(key, 'null'::jsonb), '{}')
                                       FROM jsonb_each(old.c->'job')
                                       WHERE key NOT IN (SELECT jsonb_object_keys(
                                           comsa_migrate.written_job(jsonb_populate_record(
                                               NULL::public.jobs, old.c->'job'))))))::text));

CREATE OR REPLACE FUNCTION comsa_migrate.stored_content(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'job', comsa_migrate.written_job(j),
        'logs', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(l.timestamp, l.message) ORDER BY l.id)
            FROM public.job_logs l WHERE l.job_id = p_id), '[]'),
        'files', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(
                       f.file_type, f.file_name, f.file_path, f.file_size, f.created_at)
                   ORDER BY f.file_type, f.file_path)
            FROM public.job_files f WHERE f.job_id = p_id), '[]'))
    FROM public.jobs j WHERE j.id = p_id);
END
$$;

CREATE OR REPLACE FUNCTION comsa_migrate.incoming_content(job jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'job', comsa_migrate.written_job(jsonb_populate_record(NULL::public.jobs, job)),
        'logs', COALESCE((
            SELECT jsonb_agg(jsonb_build_array((e.v->>0)::timestamp, e.v->>1) ORDER BY e.n)
            FROM jsonb_array_elements(job->'logs') WITH ORDINALITY AS e(v, n)), '[]'),
        'files', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(
                       e.v->>0, e.v->>1, e.v->>2, (e.v->>3)::bigint, (e.v->>4)::timestamp)
                   ORDER BY e.v->>0, e.v->>2)
            FROM jsonb_array_elements(job->'files') AS e(v)), '[]'));
END
$$;

UPDATE comsa_migrate.job_state s
SET content_digest = md5(comsa_migrate.stored_content(s.job_id)::text)
FROM still_as_written w
WHERE w.job_id = s.job_id;

-- A job's uploads as job_input_files holds them, [filename, md5 of the base64] by name.
-- Called only for a job that carries its uploads, which it does only when the table
-- exists: PL/pgSQL resolves the table when the statement first runs, and keeps the plan.
CREATE FUNCTION comsa_migrate.stored_inputs(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT COALESCE(jsonb_agg(jsonb_build_array(i.filename, md5(i.content_b64))
                                      ORDER BY i.filename), '[]')
            FROM public.job_input_files i WHERE i.job_id = p_id);
END
$$;

CREATE FUNCTION comsa_migrate.incoming_inputs(job jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_agg(jsonb_build_array(e.v->>0, md5(e.v->>1)) ORDER BY e.v->>0), '[]')
    FROM jsonb_array_elements(job->'inputs') AS e(v)
$$;

-- plan_job() as in 002, with two additions. The never-clobber rule reads the rows of
-- jobs, job_logs and job_files (as stored_content() now gives them), not job_input_files:
-- those mirror upload bytes, which the dashboard itself writes the same way. And a job
-- that carries its uploads ("inputs", given only when job_input_files exists) is an
-- update when they differ from the table's, even if nothing else does.
CREATE OR REPLACE FUNCTION comsa_migrate.plan_job(job jsonb, force boolean,
                                                  OUT action text, OUT stored jsonb,
                                                  OUT incoming jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    last_digest text;
BEGIN
    stored := comsa_migrate.stored_content((job->>'id')::uuid);
    incoming := comsa_migrate.incoming_content(job);
    IF stored IS NULL THEN
        action := 'insert';
    ELSIF stored = incoming THEN
        action := 'unchanged';
    ELSE
        SELECT s.content_digest INTO last_digest
        FROM comsa_migrate.job_state s WHERE s.job_id = (job->>'id')::uuid;
        IF force OR last_digest = md5(stored::text) THEN
            action := 'update';
        ELSE
            action := 'conflict';
        END IF;
    END IF;
    IF job ? 'inputs' THEN
        incoming := incoming || jsonb_build_object('inputs', comsa_migrate.incoming_inputs(job));
        IF stored IS NOT NULL THEN
            stored := stored || jsonb_build_object(
                'inputs', comsa_migrate.stored_inputs((job->>'id')::uuid));
            IF action = 'unchanged' AND stored->'inputs' <> incoming->'inputs' THEN
                action := 'update';
            END IF;
        END IF;
    END IF;
END
$$;

-- apply_job() as in 002, with the per-job lock of 004 first, and: the digest covers what
-- stored_content() gives (never the uploads); a job's uploads are made equal to
-- "inputs" in job_input_files, upserted on (job_id, filename) as the dashboard does; and
-- "owner_id" becomes the job's user_id when it has none.
CREATE OR REPLACE FUNCTION comsa_migrate.apply_job(job jsonb, force boolean, p_run_id bigint)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    plan record;
    v_job_id uuid := (job->>'id')::uuid;
    n_jobs int := 0;
    n_logs int := 0;
    n_files int := 0;
    n_inputs int := 0;
    n_owned int := 0;
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
        IF job ? 'inputs' AND (plan.stored IS NULL
                               OR plan.stored->'inputs' <> plan.incoming->'inputs') THEN
            -- job_input_files is the dashboard's table, and may come after this function:
            -- these statements run only for a job that carries "inputs", given only when
            -- the table exists
            IF plan.stored IS NOT NULL THEN
                DELETE FROM public.job_input_files i
                WHERE i.job_id = v_job_id
                  AND NOT i.filename IN (SELECT e.v->>0
                                         FROM jsonb_array_elements(job->'inputs') AS e(v));
            END IF;
            IF jsonb_array_length(job->'inputs') > 0 THEN
                INSERT INTO public.job_input_files AS i (job_id, filename, content_b64)
                SELECT v_job_id, e.v->>0, e.v->>1 FROM jsonb_array_elements(job->'inputs') AS e(v)
                ON CONFLICT (job_id, filename) DO UPDATE
                SET content_b64 = EXCLUDED.content_b64
                WHERE i.content_b64 IS DISTINCT FROM EXCLUDED.content_b64;
                GET DIAGNOSTICS n_inputs = ROW_COUNT;
            END IF;
        END IF;
    END IF;
    IF job ? 'owner_id' AND plan.action <> 'conflict' THEN
        UPDATE public.jobs SET user_id = (job->>'owner_id')::uuid
        WHERE id = v_job_id AND user_id IS NULL;
        GET DIAGNOSTICS n_owned = ROW_COUNT;
    END IF;
    IF plan.action <> 'conflict' THEN
        INSERT INTO comsa_migrate.job_state AS s
            (job_id, fingerprint, content_digest, source_path, run_id)
        VALUES (v_job_id, job->>'fingerprint', md5((plan.incoming - 'inputs')::text),
                job->>'source_path', p_run_id)
        ON CONFLICT (job_id) DO UPDATE SET
            fingerprint = EXCLUDED.fingerprint, content_digest = EXCLUDED.content_digest,
            source_path = EXCLUDED.source_path, written_at = now(), run_id = EXCLUDED.run_id;
    END IF;
    RETURN jsonb_build_object('action', plan.action, 'jobs', n_jobs, 'job_logs', n_logs,
                              'job_files', n_files, 'job_input_files', n_inputs,
                              'owned', n_owned);
END
$$;
