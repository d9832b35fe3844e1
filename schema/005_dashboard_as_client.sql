-- The dashboard as the client: compare only what comsa-migrate writes, give migrated jobs
-- an owner, and mirror uploads into the dashboard's job_input_files. The functions that
-- do it are in functions/; what is left here is the one conversion of the jobs already
-- written.

-- Bring each job's digest to the new form of the content (stored_content() in
-- functions/20_job_content.sql: only the columns comsa-migrate writes) wherever it still
-- described the rows: as they are now, or as they were before the dashboard set a column
-- of its own (user_id) that was NULL when comsa-migrate wrote them. Digests that match
-- neither were changed by something else, and stay so. The content before and after is
-- computed by functions of this session only, so that this conversion reads the same
-- whatever the functions become later.
CREATE FUNCTION pg_temp.written_job(r public.jobs) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'type', r.type, 'status', r.status, 'algorithm', r.algorithm,
        'age_group', r.age_group, 'country', r.country,
        'calib_model_type', r.calib_model_type, 'ensemble', r.ensemble,
        'created_at', r.created_at, 'started_at', r.started_at,
        'completed_at', r.completed_at, 'error', r.error, 'result', r.result,
        'input_file_path', r.input_file_path)
$$;

CREATE FUNCTION pg_temp.content_before(p_id uuid) RETURNS jsonb
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

CREATE FUNCTION pg_temp.content_now(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'job', pg_temp.written_job(j),
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

CREATE TEMPORARY TABLE still_as_written ON COMMIT DROP AS
SELECT s.job_id
FROM comsa_migrate.job_state s
CROSS JOIN LATERAL (SELECT pg_temp.content_before(s.job_id) AS c) AS old
WHERE old.c IS NOT NULL
  AND s.content_digest IN (
      md5(old.c::text),
      md5(jsonb_set(old.c, '{job}',
                    (old.c->'job') || (SELECT COALESCE(jsonb_object_agg(key, 'null'::jsonb), '{}')
                                       FROM jsonb_each(old.c->'job')
                                       WHERE key NOT IN (SELECT jsonb_object_keys(
                                           pg_temp.written_job(jsonb_populate_record(
                                               NULL::public.jobs, old.c->'job'))))))::text));

UPDATE comsa_migrate.job_state s
SET content_digest = md5(pg_temp.content_now(s.job_id)::text)
FROM still_as_written w
WHERE w.job_id = s.job_id;

DROP FUNCTION pg_temp.content_now(uuid);
DROP FUNCTION pg_temp.content_before(uuid);
DROP FUNCTION pg_temp.written_job(public.jobs);
