-- The admin console (services/admin, docs/admin.md): staff users and their sessions, the staff
-- realm's login throttling, staff API keys, and the audit of every change made in the console or
-- its API. Staff users are a realm of their own, apart from portal_users: a staff login never
-- opens the Client Portal and a portal login never opens the console.
-- Tokens and key secrets are never stored: only SHA-256 of their random part.

CREATE TABLE staff_users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL,
    email_key            text NOT NULL UNIQUE,          -- lower(trim(email))
    name                 text NOT NULL DEFAULT '',
    role                 text NOT NULL CHECK (role IN ('owner', 'admin', 'operator', 'viewer')),
    password_hash        text,
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    password_changed_at  timestamptz
);

CREATE TABLE staff_sessions (
    id              uuid PRIMARY KEY,
    staff_id        uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    secret_hash     bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX staff_sessions_live ON staff_sessions (staff_id) WHERE revoked_at IS NULL;

-- Keyed by the normalised email whether or not a staff user has it (no enumeration by hammering).
CREATE TABLE staff_login_failures (
    email_key       text PRIMARY KEY,
    failed_count    integer NOT NULL DEFAULT 0,
    last_failed_at  timestamptz
);

-- API keys for automation: `lw_staff_<id>_<secret>`, shown once. A key acts as its staff user
-- with at most the key's role (never more than the user's own role at the time of use).
CREATE TABLE staff_api_keys (
    id            text PRIMARY KEY,                      -- the visible part, 16 hex digits
    staff_id      uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'operator', 'viewer')),
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_by    text
);
CREATE INDEX staff_api_keys_staff ON staff_api_keys (staff_id);

-- Every change made in the console or its API (and by `leadwire staff`): who, when, what.
CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,                           -- staff email, or cli:<login>
    staff_id    uuid,
    via         text NOT NULL CHECK (via IN ('console', 'api', 'cli')),
    api_key_id  text,
    action      text NOT NULL,                           -- e.g. options.save, return.decide
    target      text NOT NULL DEFAULT '',
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX admin_audit_at ON admin_audit (at DESC, id DESC);
