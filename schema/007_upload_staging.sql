-- Where a large upload's bytes wait, within its job's transaction, for apply_job().
--
-- An upload above a few MB does not travel inside its job's JSON payload (the payload
-- carries its name, the md5 of its base64 and its size): the client sends its base64 in
-- chunks, one INSERT each, in the job's own transaction before apply_job(), which joins
-- them into job_input_files.content_b64 and checks the digest; apply_job_outcome()
-- deletes them before the transaction ends, whatever the outcome. So no row of this
-- table outlives the transaction that wrote it, and no other transaction ever sees one.
-- UNLOGGED: what never outlives a transaction needs no WAL (a crash empties the table).
-- No unique key: a second writer of the same job must not wait here, before the job's
-- lock, on rows the first one never commits.
CREATE UNLOGGED TABLE comsa_migrate.upload_chunks (
    job_id UUID NOT NULL,
    filename TEXT NOT NULL,
    seq INTEGER NOT NULL,
    -- base64 without newlines, each chunk but the last a whole number of 4-character groups
    chunk TEXT NOT NULL
);
-- read back once, within the transaction: stored out of line, without spending CPU on compression
ALTER TABLE comsa_migrate.upload_chunks ALTER COLUMN chunk SET STORAGE EXTERNAL;
CREATE INDEX upload_chunks_job ON comsa_migrate.upload_chunks (job_id, filename, seq);
