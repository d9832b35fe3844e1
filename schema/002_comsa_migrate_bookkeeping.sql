-- comsa-migrate's own bookkeeping, kept apart from the dashboard's tables in schema
-- comsa_migrate: what the tool last wrote for each job, its runs, and the server-side
-- functions that write one job in one transaction.

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

-- The rows of one job as they stand in the database, in one canonical value
-- (NULL when the job has no row). Serial ids are left out: they carry no meaning.
-- This and incoming_content() are PL/pgSQL, not SQL, functions because PL/pgSQL keeps
-- its query plans for the session: a SQL function called from apply_jobs() would be
-- parsed and planned again for every job, after each job's COMMIT.
CREATE FUNCTION comsa_migrate.stored_content(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'job', to_jsonb(j),
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

-- The same canonical value for a job the tool is about to write, typed through the
-- tables' own row types so that both sides compare equal when the rows would be equal.
-- (jsonb_populate_record() ignores the keys that are not columns: logs, files, ...)
CREATE FUNCTION comsa_migrate.incoming_content(job jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'job', to_jsonb(jsonb_populate_record(NULL::public.jobs, job)),
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

-- What writing `job` would do: insert, update, unchanged or conflict. The one place
-- where the never-clobber rule lives; the backfill, the report and the daemon use it.
CREATE FUNCTION comsa_migrate.plan_job(job jsonb, force boolean,
                                       OUT action text, OUT stored jsonb, OUT incoming jsonb)
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
END
$$;

-- Write one job (inside the caller's transaction) and return what was done:
-- {"action": ..., "jobs": n, "job_logs": n, "job_files": n}.
CREATE FUNCTION comsa_migrate.apply_job(job jsonb, force boolean, p_run_id bigint)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    plan record;
    v_job_id uuid := (job->>'id')::uuid;
    n_jobs int := 0;
    n_logs int := 0;
    n_files int := 0;
BEGIN
    plan := comsa_migrate.plan_job(job, force);
    IF plan.action IN ('insert', 'update') THEN
        IF plan.stored IS NULL OR plan.stored->'job' <> plan.incoming->'job' THEN
            -- the function in FROM, not (f(...)).*, which would call it once per column
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

-- Write a batch of jobs, each in a transaction of its own (COMMIT after each), in one
-- round trip. A job whose rows the database refuses is rolled back alone.
-- The jobs are taken by index, not by a FOR loop over a query, whose cursor the first
-- COMMIT would copy whole; outcomes gather in an array, not by appending to jsonb,
-- which would copy the growing value once per job.
CREATE PROCEDURE comsa_migrate.apply_jobs(batch jsonb, force boolean, p_run_id bigint,
                                          INOUT outcomes jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    done jsonb[] := '{}';
BEGIN
    FOR i IN 0 .. jsonb_array_length(batch) - 1 LOOP
        BEGIN
            outcome := comsa_migrate.apply_job(batch->i, force, p_run_id);
        EXCEPTION WHEN OTHERS THEN
            outcome := jsonb_build_object('action', 'error',
                                          'message', SQLERRM, 'sqlstate', SQLSTATE);
        END;
        done := done || outcome;
        COMMIT;
    END LOOP;
    outcomes := to_jsonb(done);
END
$$;
