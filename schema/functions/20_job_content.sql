-- A job's rows in one canonical value, as stored and as about to be written, so that the
-- two compare equal when the rows would be equal. Serial ids are left out: they carry no
-- meaning. The functions that run once per job are PL/pgSQL, not SQL: PL/pgSQL keeps its
-- query plans for the session, where a SQL function would be parsed and planned again
-- for every job.

-- The columns of `jobs` that comsa-migrate writes: those of 001. A column the dashboard
-- added later (user_id, from its 002_users) is the dashboard's, never a change. Named one
-- by one, in a plain expression that the planner inlines: no per-key loop for each job.
-- It is inlined only where it is declared no less volatile than its body (STABLE: the
-- conversion of times to JSON is); a call that is not inlined is parsed and planned again
-- each time, which cost more than the rest of the job's plan. It is given a row of FROM:
-- given a call, it is inlined with that call written once for each of its columns.
CREATE OR REPLACE FUNCTION comsa_migrate.written_job(r public.jobs) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'type', r.type, 'status', r.status, 'algorithm', r.algorithm,
        'age_group', r.age_group, 'country', r.country,
        'calib_model_type', r.calib_model_type, 'ensemble', r.ensemble,
        'created_at', r.created_at, 'started_at', r.started_at,
        'completed_at', r.completed_at, 'error', r.error, 'result', r.result,
        'input_file_path', r.input_file_path)
$$;

-- The rows of one job as they stand in the database (NULL when the job has no row).
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

-- The same value for a job the tool is about to write, typed through the tables' own row
-- types (jsonb_populate_record() ignores the keys that are not columns: logs, files, ...).
CREATE OR REPLACE FUNCTION comsa_migrate.incoming_content(job jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'job', comsa_migrate.written_job(r),
        'logs', COALESCE((
            SELECT jsonb_agg(jsonb_build_array((e.v->>0)::timestamp, e.v->>1) ORDER BY e.n)
            FROM jsonb_array_elements(job->'logs') WITH ORDINALITY AS e(v, n)), '[]'),
        'files', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(
                       e.v->>0, e.v->>1, e.v->>2, (e.v->>3)::bigint, (e.v->>4)::timestamp)
                   ORDER BY e.v->>0, e.v->>2)
            FROM jsonb_array_elements(job->'files') AS e(v)), '[]'))
    FROM jsonb_populate_record(NULL::public.jobs, job) AS r);
END
$$;

-- A job's uploads as job_input_files holds them, [filename, md5 of the base64] by name.
-- Called only for a job that carries its uploads, which it does only when the table
-- exists: PL/pgSQL resolves the table when the statement first runs, and keeps the plan.
CREATE OR REPLACE FUNCTION comsa_migrate.stored_inputs(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT COALESCE(jsonb_agg(jsonb_build_array(i.filename, md5(i.content_b64))
                                      ORDER BY i.filename), '[]')
            FROM public.job_input_files i WHERE i.job_id = p_id);
END
$$;

-- The same for the uploads a job carries: each as [filename, base64], or, one too large to
-- travel inside the payload, as [filename, md5 of its base64, size in bytes], its base64
-- staged apart (see staged_upload()). Both give [filename, md5 of the base64].
CREATE OR REPLACE FUNCTION comsa_migrate.incoming_inputs(job jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_agg(jsonb_build_array(
                        e.v->>0, CASE WHEN e.v->2 IS NULL THEN md5(e.v->>1) ELSE e.v->>1 END)
                    ORDER BY e.v->>0), '[]')
    FROM jsonb_array_elements(job->'inputs') AS e(v)
$$;
