-- The Client Portal's Files tab: attachments on a lead (quotes, documents), stored in PostgreSQL.
-- A file is one lead_files row and its content in 1 MiB chunks, so an upload and a download
-- stream through the portal without ever holding a whole file in memory. Both are written in one
-- transaction: a file is either all there (size and SHA-256 set) or not at all. Deleting a file
-- deletes its chunks with it.
CREATE TABLE lead_files (
    id            uuid PRIMARY KEY,
    client_id     text NOT NULL,
    lead_id       uuid NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size > 0),
    sha256        text NOT NULL,
    uploaded_by   uuid NOT NULL REFERENCES portal_users (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lead_files_lead ON lead_files (client_id, lead_id, created_at);

CREATE TABLE lead_file_chunks (
    -- Deferred: an upload writes its chunks as they arrive and its lead_files row (with the size
    -- and hash, known only then) last, in the same transaction.
    file_id  uuid NOT NULL REFERENCES lead_files (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    seq      integer NOT NULL CHECK (seq >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- Chunks are already compressed formats or small: store them as they are, out of line.
ALTER TABLE lead_file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
