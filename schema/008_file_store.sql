-- The file store: the contents of every job's files, so that they outlive the disk they
-- were read from (a pod's data/ is wiped by each deploy).
--
-- stored_files says, for each file of each job, which content it had when it was last
-- read: its path relative to DATA_DIR (jobs/<id>.json, uploads/<id>/..., outputs/<id>/...),
-- the sha256 of its bytes, and the stat it had when read (size, mtime_ns), which decides
-- whether a rerun reads it again. A row is written in the job's own transaction, after
-- its content is in the store, so no row names content the store lacks. A file removed
-- from disk keeps its row, and so its last content, with on_disk false.
--
-- The contents themselves are in the store the run names (--file-store): in this
-- database (file_contents and file_chunks below), or one object per sha256 elsewhere.
-- Each content is stored once, however many files name it; only `gc` deletes one.
CREATE TABLE comsa_migrate.stored_files (
    job_id UUID NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size BIGINT NOT NULL CHECK (size >= 0),
    mtime_ns BIGINT NOT NULL,
    on_disk BOOLEAN NOT NULL DEFAULT true,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, path)
);
CREATE INDEX stored_files_sha256 ON comsa_migrate.stored_files (sha256);

-- file_contents is the registry of the contents every store holds: a content counts as
-- stored only while its row exists, and `store` names where it is ('db', or the
-- s3://bucket/prefix URL). The `db` store keeps the bytes in file_chunks (1 MiB each but
-- the last, in seq order), written in the same transaction as the row, so a content is
-- whole once its row exists; an object store records the row after the object is put.
-- stored_at is refreshed whenever a writer puts or finds the content again, so that gc's
-- --min-age spares a content a writer is about to name. A job's transaction locks the rows
-- of the contents it names (record_stored_files()) and fails when one is missing; gc
-- deletes a row only under its own lock, after re-checking that nothing names it, and
-- the content's bytes before it commits: so no stored_files row ever names a content gone.
CREATE TABLE comsa_migrate.file_contents (
    sha256 TEXT PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size BIGINT NOT NULL CHECK (size >= 0),
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    store TEXT NOT NULL DEFAULT 'db'
);
CREATE TABLE comsa_migrate.file_chunks (
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, seq)
);
-- most outputs are compressed already (PNG) or read back whole: no CPU on compression
ALTER TABLE comsa_migrate.file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
