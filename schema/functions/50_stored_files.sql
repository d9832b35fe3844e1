-- Record, in the job's own transaction, which content each of its files had when it was
-- read (comsa_migrate.stored_files, schema/008_file_store.sql). The client has put every
-- content named here in the file store before it sends this: no row names content the
-- store lacks. The argument is one JSON object (db/job_writes.py sends it as text):
--   {"id": job id,
--    "files": [[path, sha256, size, mtime_ns], ...]   the files read and stored now,
--    "present": [path, ...]}                          every file of the job on disk now.
-- A row of a path not in "present" is a file removed from disk: it keeps its last content,
-- with on_disk false. A file on disk that was not read again (its stat unchanged) keeps
-- its row as it is. Returns {"stored_files": rows inserted or changed}.
CREATE OR REPLACE FUNCTION comsa_migrate.record_stored_files(record text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    parsed jsonb := record::jsonb;
    v_job_id uuid := (parsed->>'id')::uuid;
    n_stored int := 0;
    n_gone int := 0;
BEGIN
    IF jsonb_array_length(parsed->'files') > 0 THEN
        INSERT INTO comsa_migrate.stored_files AS s (job_id, path, sha256, size, mtime_ns)
        SELECT v_job_id, e.v->>0, e.v->>1, (e.v->>2)::bigint, (e.v->>3)::bigint
        FROM jsonb_array_elements(parsed->'files') AS e(v)
        ON CONFLICT (job_id, path) DO UPDATE SET
            sha256 = EXCLUDED.sha256, size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,
            on_disk = true, stored_at = now()
        WHERE (s.sha256, s.size, s.mtime_ns, s.on_disk)
              IS DISTINCT FROM (EXCLUDED.sha256, EXCLUDED.size, EXCLUDED.mtime_ns, true);
        GET DIAGNOSTICS n_stored = ROW_COUNT;
    END IF;
    UPDATE comsa_migrate.stored_files s
    SET on_disk = p.present
    FROM (SELECT f.path,
                 f.path IN (SELECT jsonb_array_elements_text(parsed->'present')) AS present
          FROM comsa_migrate.stored_files f WHERE f.job_id = v_job_id) AS p
    WHERE s.job_id = v_job_id AND s.path = p.path AND s.on_disk IS DISTINCT FROM p.present;
    GET DIAGNOSTICS n_gone = ROW_COUNT;
    RETURN jsonb_build_object('stored_files', n_stored + n_gone);
END
$$;
