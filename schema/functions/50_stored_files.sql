-- Record, in the job's own transaction, which content each of its files had when it was
-- read (comsa_migrate.stored_files, schema/008_file_store.sql). The client has put every
-- content named here in the file store before it sends this. The argument is one JSON
-- object (db/job_writes.py sends it as text):
--   {"id": job id,
--    "store": the store's URL ('db', s3://bucket/prefix; 'db' when absent),
--    "files": [[path, sha256, size, mtime_ns], ...]   the files read and stored now,
--    "present": [path, ...]}                          every file of the job on disk now.
-- The job's advisory lock comes first (the one apply_job() takes), so that two writers of
-- the job (a daemon and a backfill) wait for each other, and the later scan's "present"
-- is the one that stays. Then the registry rows (file_contents) of the contents named
-- are locked against gc, in sha256 order: a content missing from the registry (gc deleted
-- it after the client found it there) fails the job, whose transaction is rolled back, so
-- that the next run reads the job again and puts the content again. The lock is FOR KEY
-- SHARE: writers naming the same content (the empty file's) do not wait for each other,
-- and gc's FOR UPDATE waits for them (file_store/gc.py).
-- A row of a path not in "present" is a file removed from disk: it keeps its last content,
-- with on_disk false. A file on disk that was not read again (its stat unchanged) keeps
-- its row as it is. Returns {"stored_files": rows inserted or changed}.
-- Its statements find rows by primary key only. A cold backfill starts on empty tables
-- that grow faster than they are analysed, and a plan cached while file_contents was
-- empty scanned it whole for every job (quadratic: minutes at 20,000 jobs), hence no
-- sequential scans here.
CREATE OR REPLACE FUNCTION comsa_migrate.record_stored_files(record text)
RETURNS jsonb
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    parsed jsonb := record::jsonb;
    v_job_id uuid := (parsed->>'id')::uuid;
    v_store text := coalesce(parsed->>'store', 'db');
    v_named text[];
    v_missing text;
    n_stored int := 0;
    n_gone int := 0;
BEGIN
    PERFORM comsa_migrate.lock_job(v_job_id);
    IF jsonb_array_length(parsed->'files') > 0 THEN
        SELECT array_agg(DISTINCT e.v->>1 ORDER BY e.v->>1) INTO v_named
        FROM jsonb_array_elements(parsed->'files') AS e(v);
        PERFORM 1 FROM comsa_migrate.file_contents c
        WHERE c.sha256 = ANY(v_named) AND c.store = v_store
        ORDER BY c.sha256 FOR KEY SHARE;
        SELECT n.sha256 INTO v_missing
        FROM unnest(v_named) AS n(sha256)
        WHERE NOT EXISTS (SELECT FROM comsa_migrate.file_contents c
                          WHERE c.sha256 = n.sha256 AND c.store = v_store)
        LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'file store %: content % is not stored (gc deleted it meanwhile); '
                            'the job is read again by the next run', v_store, v_missing
                USING ERRCODE = '40001';
        END IF;
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
