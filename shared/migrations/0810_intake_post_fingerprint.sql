-- The SHA-256 of what a post asked for (lead type, fields, force_id, callback_url;
-- services/intake/rules.py `post_fingerprint`): a re-send with the same Idempotency-Key and another
-- request is refused (409) instead of being answered with the first post's lead. NULL on receipts
-- written before this column: those are never compared.
ALTER TABLE intake_posts ADD COLUMN request_sha256 bytea;
