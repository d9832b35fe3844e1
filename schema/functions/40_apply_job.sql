-- The base64 of a job's upload that came in chunks (comsa_migrate.upload_chunks, in this
-- transaction), joined, when its md5 is the one the job's payload carries; else the upload
-- changed between the client's two reads of it (one for the payload, one to send it), or
-- could not be read again, and the job's write is refused: the next run writes it.
CREATE OR REPLACE FUNCTION comsa_migrate.staged_upload(p_job_id uuid, p_filename text,
                                                       p_md5 text)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    content text;
BEGIN
    SELECT string_agg(c.chunk, '' ORDER BY c.seq) INTO content
    FROM comsa_migrate.upload_chunks c
    WHERE c.job_id = p_job_id AND c.filename = p_filename;
    IF content IS NULL OR md5(content) <> p_md5 THEN
        RAISE EXCEPTION 'the upload % changed while it was read, or could not be read again; '
                        'the next run writes this job', p_filename
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN content;
END
$$;

-- Write one job (inside the caller's transaction) and return what was done:
-- {"action": ..., "jobs": n, "job_logs": n, "job_files": n, "job_input_files": n,
--  "owned": n}.
-- The job's advisory lock comes first: a second writer of the same job waits for the
-- first to commit, then plans against what the first wrote. A part (the job row, its
-- logs, its files, its uploads) is written by the rule of rewrites(); logs and files are
-- replaced whole. The digest covers what stored_content() gives (never the uploads); a
-- job's uploads are made equal to "inputs" in job_input_files, upserted on
-- (job_id, filename) as the dashboard does (an upload that came in chunks is joined only
-- when the table's digest of it differs); and "owner_id" becomes the job's user_id when
-- it has none.
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
    PERFORM comsa_migrate.lock_job(v_job_id);
    -- a statement of its own after the lock: under READ COMMITTED it sees every commit
    -- made before the lock was granted
    plan := comsa_migrate.plan_job(job, force);
    IF plan.action IN ('insert', 'update') THEN
        IF comsa_migrate.rewrites(plan.stored, plan.incoming, 'job') THEN
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
        IF comsa_migrate.rewrites(plan.stored, plan.incoming, 'logs') THEN
            IF plan.stored IS NOT NULL THEN
                DELETE FROM public.job_logs l WHERE l.job_id = v_job_id;
            END IF;
            INSERT INTO public.job_logs (job_id, timestamp, message)
            SELECT v_job_id, (e.v->>0)::timestamp, e.v->>1
            FROM jsonb_array_elements(job->'logs') WITH ORDINALITY AS e(v, n) ORDER BY e.n;
            GET DIAGNOSTICS n_logs = ROW_COUNT;
        END IF;
        IF comsa_migrate.rewrites(plan.stored, plan.incoming, 'files') THEN
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
        IF job ? 'inputs' AND comsa_migrate.rewrites(plan.stored, plan.incoming, 'inputs') THEN
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
                SELECT v_job_id, e.v->>0,
                       CASE WHEN e.v->2 IS NULL THEN e.v->>1
                            ELSE comsa_migrate.staged_upload(v_job_id, e.v->>0, e.v->>1) END
                FROM jsonb_array_elements(job->'inputs') AS e(v)
                WHERE e.v->2 IS NULL OR plan.stored IS NULL
                   OR NOT plan.stored->'inputs' @> jsonb_build_array(e.v - 2)
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

-- apply_job() as one job's transaction sees it: a job the database refuses (a value its
-- row types reject, say, or a statement or lock timeout that cancelled its write) comes
-- back as {"action": "error", "message", "sqlstate"}, its writes undone, and the caller
-- goes on with the next job; a fault of the server or the session (out of disk space or
-- memory, too many connections, shutting down, I/O and internal errors) as
-- {"action": "stopped", ...}, after which the caller stops. The caller runs each job in
-- a transaction of its own, READ COMMITTED (apply_job() plans after it has taken the
-- job's lock, and must see what a writer committed before), with its own limits given by
-- set_config(..., true): see
-- db/job_writes.py. The SQLSTATE classes are those of db/faults.py (a test compares).
-- The chunks of its large uploads that the caller staged before it (see staged_upload())
-- are deleted here, whatever the outcome, so that none outlives the transaction.
-- p_lock_timeout gives the rest of the transaction the tool's lock_timeout, no idle limit,
-- synchronous_commit off and enable_seqscan off, so that a job's write needs no statement
-- of its own for them (NULL: the caller has set them). The statement timeout cannot be
-- set this way (it is armed when a statement starts): the client sends it before, when
-- the session's differs. enable_seqscan: PL/pgSQL keeps a statement's plan for the
-- session, after five runs a generic one made for the tables as they then were; made
-- while jobs was analyzed empty or small, it read jobs whole to find one row, for the
-- job and for the foreign-key check of each of its logs and files, so that each job's
-- write took longer than the one before. Without sequential scans they go by key, as on
-- tables never analyzed; every table a job's write reads has its key indexed.
CREATE OR REPLACE FUNCTION comsa_migrate.apply_job_outcome(job text, force boolean,
                                                           p_run_id bigint, p_lock_timeout text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    parsed jsonb;
BEGIN
    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', p_lock_timeout, true),
                set_config('idle_in_transaction_session_timeout', '0', true),
                set_config('synchronous_commit', 'off', true),
                set_config('enable_seqscan', 'off', true);
    END IF;
    BEGIN
        parsed := job::jsonb;  -- the cast too: a job JSON the server cannot take is its error
        outcome := comsa_migrate.apply_job(parsed, force, p_run_id);
    EXCEPTION
        WHEN query_canceled THEN
            outcome := jsonb_build_object('action', 'error', 'message', SQLERRM,
                                          'sqlstate', SQLSTATE);
        WHEN OTHERS THEN
            outcome := jsonb_build_object(
                'action', CASE WHEN left(SQLSTATE, 2) IN ('08', '53', '57', '58', 'XX')
                               THEN 'stopped' ELSE 'error' END,
                'message', SQLERRM, 'sqlstate', SQLSTATE);
    END;
    IF parsed IS NULL THEN  -- the payload begins with its id (store.job_payload)
        DELETE FROM comsa_migrate.upload_chunks c
        WHERE c.job_id = (regexp_match(job, '^\{"id":"([0-9a-f-]{36})"'))[1]::uuid;
    ELSIF parsed ? 'inputs' THEN
        IF EXISTS (SELECT FROM jsonb_array_elements(parsed->'inputs') AS e(v)
                   WHERE e.v->2 IS NOT NULL) THEN
            DELETE FROM comsa_migrate.upload_chunks c WHERE c.job_id = (parsed->>'id')::uuid;
        END IF;
    END IF;
    RETURN outcome;
END
$$;

-- The form of the version before, whose caller sends every limit in a statement before.
CREATE OR REPLACE FUNCTION comsa_migrate.apply_job_outcome(job text, force boolean,
                                                           p_run_id bigint)
RETURNS jsonb
LANGUAGE sql AS $$
    SELECT comsa_migrate.apply_job_outcome(job, force, p_run_id, NULL)
$$;

-- The batch procedure of 0.2.0 (a CALL that commits after each job), kept for one
-- release so that a 0.2.0 backfill or daemon still running while the database is
-- upgraded goes on writing; nothing of this version calls it.
CREATE OR REPLACE PROCEDURE comsa_migrate.apply_jobs(batch jsonb, force boolean, p_run_id bigint,
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
