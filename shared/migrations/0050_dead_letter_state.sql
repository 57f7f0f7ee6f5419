-- The admin console's dead-letter tools (services/admin): what became of a dead letter. A row
-- with resolution NULL is still open; `replayed` (republished to its queue under the same
-- message_id) or `purged` (thrown away) close it, with who and when. Written only by the admin
-- console (the failure routing in shared/service.py still only inserts rows).
ALTER TABLE dead_letters
    ADD COLUMN resolution   text CHECK (resolution IN ('replayed', 'purged')),
    ADD COLUMN resolved_at  timestamptz,
    ADD COLUMN resolved_by  text;
CREATE INDEX dead_letters_open ON dead_letters (queue, id) WHERE resolution IS NULL;
