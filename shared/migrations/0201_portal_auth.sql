-- portal_auth: sessions, failed-login counters and password reset tokens.
-- Tokens are never stored: only a SHA-256 of their random secret part, compared in constant time.

CREATE TABLE portal_sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES portal_users (id) ON DELETE CASCADE,
    client_id       text NOT NULL,
    secret_hash     bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,             -- idle expiry counts from here
    expires_at      timestamptz NOT NULL,             -- absolute expiry
    revoked_at      timestamptz,
    revoked_reason  text                              -- logout, revoke_all, user_disabled, client_inactive...
);
CREATE INDEX portal_sessions_live_user ON portal_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);

-- Keyed by the normalised email whether or not a user has it, so that throttling behaves the same
-- for existing and unknown emails (no account enumeration by hammering).
CREATE TABLE portal_login_failures (
    email_key       text PRIMARY KEY,
    failed_count    integer NOT NULL DEFAULT 0,
    last_failed_at  timestamptz
);

CREATE TABLE portal_password_resets (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES portal_users (id) ON DELETE CASCADE,
    secret_hash     bytea NOT NULL,
    purpose         text NOT NULL DEFAULT 'reset' CHECK (purpose IN ('reset', 'invite')),
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX portal_password_resets_user ON portal_password_resets (user_id) WHERE used_at IS NULL;

ALTER TABLE portal_users ADD COLUMN password_changed_at timestamptz;
CREATE INDEX portal_users_parent ON portal_users (parent_user_id);
