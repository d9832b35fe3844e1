-- COMSA dashboard schema 1.0: jobs, job_logs and job_files, as the dashboard's
-- comsa-dashboard-schema.md gives them.

-- uuid_generate_v4() comes from uuid-ossp where the server has it; elsewhere the
-- built-in gen_random_uuid() stands in under the same name.
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'uuid-ossp is not available (%); using gen_random_uuid()', SQLERRM;
    END;
    IF to_regprocedure('uuid_generate_v4()') IS NULL THEN
        CREATE FUNCTION public.uuid_generate_v4() RETURNS uuid
            LANGUAGE sql VOLATILE AS 'SELECT gen_random_uuid()';
    END IF;
END
$$;

CREATE TABLE jobs (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    type VARCHAR(50) NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    algorithm VARCHAR(50),
    age_group VARCHAR(50),
    country VARCHAR(100),
    calib_model_type VARCHAR(50),
    ensemble BOOLEAN DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    error JSONB DEFAULT '{}',
    result JSONB DEFAULT '{}',
    input_file_path TEXT,
    CONSTRAINT valid_status CHECK (status IN ('pending', 'running', 'completed', 'failed'))
);

CREATE INDEX idx_jobs_status ON jobs (status);
CREATE INDEX idx_jobs_created_at ON jobs (created_at DESC);
CREATE INDEX idx_jobs_algorithm ON jobs (algorithm);
CREATE INDEX idx_jobs_country ON jobs (country);

CREATE TABLE job_logs (
    id SERIAL PRIMARY KEY,
    job_id UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    timestamp TIMESTAMP NOT NULL DEFAULT NOW(),
    message TEXT NOT NULL
);

CREATE INDEX idx_job_logs_job_id ON job_logs (job_id, timestamp);

CREATE TABLE job_files (
    id SERIAL PRIMARY KEY,
    job_id UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    file_type VARCHAR(20) NOT NULL,
    file_name VARCHAR(255) NOT NULL,
    file_path TEXT NOT NULL,
    file_size BIGINT,
    created_at TIMESTAMP NOT NULL DEFAULT NOW(),
    CONSTRAINT valid_file_type CHECK (file_type IN ('input', 'output'))
);

CREATE INDEX idx_job_files_job_id ON job_files (job_id);
CREATE INDEX idx_job_files_type ON job_files (job_id, file_type);
