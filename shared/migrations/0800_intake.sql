-- HTTP lead intake (services/intake, docs/intake.md).

-- API keys of lead sources: a key posts leads as exactly one source. The token is shown once at
-- creation; only its SHA-256 is kept. `key_id` is the token's public part (how a request finds its
-- row); the hash of the whole token is compared in constant time.
CREATE TABLE source_api_keys (
    key_id          text PRIMARY KEY,
    source_id       text NOT NULL,
    token_sha256    bytea NOT NULL,
    label           text NOT NULL DEFAULT '',
    rate_per_second integer NOT NULL DEFAULT 50 CHECK (rate_per_second > 0),
    test_mode       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX source_api_keys_source ON source_api_keys (source_id);

-- One row per (source, idempotency key) posted over HTTP: the receipt a 202 points at, and the
-- callback to call once the lead is decided. The lead itself is the router's row in `leads` with
-- the same (source_id, idempotency_key).
CREATE TABLE intake_posts (
    id                 uuid PRIMARY KEY,
    source_id          text NOT NULL,
    idempotency_key    text NOT NULL,
    lead_type_id       text NOT NULL,
    key_id             text NOT NULL,
    callback_url       text,
    callback_attempts  integer NOT NULL DEFAULT 0,
    callback_not_before timestamptz,
    callback_done_at   timestamptz,
    callback_result    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, idempotency_key)
);
CREATE INDEX intake_posts_callbacks ON intake_posts (created_at)
    WHERE callback_url IS NOT NULL AND callback_done_at IS NULL;

-- Rate limits per API key: a fixed one-second window counter shared by every intake replica.
CREATE UNLOGGED TABLE intake_rate_windows (
    key_id        text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (key_id, window_start)
);

-- Buyers' API keys (docs/buyer-api.md): a key acts for exactly one client. Created by a portal
-- admin user on the portal's API keys page, or by `leadwire keys create-buyer`.
CREATE TABLE buyer_api_keys (
    key_id          text PRIMARY KEY,
    client_id       text NOT NULL,
    token_sha256    bytea NOT NULL,
    label           text NOT NULL DEFAULT '',
    created_by      text,
    rate_per_second integer NOT NULL DEFAULT 20 CHECK (rate_per_second > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX buyer_api_keys_client ON buyer_api_keys (client_id);

-- A buyer's disposition of a lead delivered to it (new, contacted, quoted, won, lost, bad), set
-- through the buyer API. Written by services/intake only.
CREATE TABLE buyer_lead_dispositions (
    client_id    text NOT NULL,
    lead_id      uuid NOT NULL,
    disposition  text NOT NULL,
    note         text NOT NULL DEFAULT '',
    updated_by   text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, lead_id)
);
