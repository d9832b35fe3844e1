-- The dashboard's job_input_files (its migration 003_input_file_storage), which it creates
-- itself at start-up: `comsa-migrate init-db --input-files` creates it beforehand, for
-- operators who migrate before the dashboard first starts. The same DDL, so that the
-- dashboard's own CREATE ... IF NOT EXISTS finds it as it would have made it.
CREATE TABLE IF NOT EXISTS job_input_files (
    id          SERIAL PRIMARY KEY,
    job_id      UUID NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    filename    TEXT NOT NULL,
    content_b64 TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT NOW(),
    UNIQUE (job_id, filename)
);
CREATE INDEX IF NOT EXISTS idx_job_input_files_job_id ON job_input_files(job_id);
