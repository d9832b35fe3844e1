-- Whether writing a job rewrites one part of it ('job', 'logs', 'files' or 'inputs', as
-- plan_job() gives them): a part is written when the job has no rows yet, or when it
-- differs from what is stored; logs and files are then replaced whole. The one place of
-- this rule: apply_job() writes by it, and the report counts the rows it would write by
-- it (db/plans.py). A plain expression, which the planner inlines.
CREATE OR REPLACE FUNCTION comsa_migrate.rewrites(stored jsonb, incoming jsonb, part text)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT stored IS NULL OR stored->part IS DISTINCT FROM incoming->part
$$;

-- What writing `job` would do: insert, update, unchanged or conflict. The one place where
-- the never-clobber rule lives; the backfill, the report and the daemon use it. The rule
-- reads the rows of jobs, job_logs and job_files (as stored_content() gives them), not
-- job_input_files: those mirror upload bytes, which the dashboard itself writes the same
-- way. A job that carries its uploads ("inputs", given only when job_input_files exists)
-- is an update when they differ from the table's, even if nothing else does.
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
            IF action = 'unchanged' AND comsa_migrate.rewrites(stored, incoming, 'inputs') THEN
                action := 'update';
            END IF;
        END IF;
    END IF;
END
$$;
