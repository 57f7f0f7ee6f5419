-- Leads and their deliveries. Shaped for the Client Portal: a client's lead list is a range scan
-- of deliveries by (client_id, created_at), joined to leads by primary key.
CREATE TABLE leads (
    id                uuid PRIMARY KEY,
    source_id         text NOT NULL,
    idempotency_key   text NOT NULL,
    lead_type_id      text NOT NULL,
    fields            jsonb NOT NULL,
    force_id          text,
    fingerprint       text,
    status            text NOT NULL CHECK (status IN ('routing', 'sold', 'unsold', 'duplicate', 'rejected')),
    reason            text,
    errors            jsonb,
    original_lead_id  uuid,
    reply_to          text,
    correlation_id    text,
    -- The router's plan: candidate delivery accounts in the order they are to be tried.
    plan              jsonb NOT NULL DEFAULT '[]',
    received_at       timestamptz NOT NULL DEFAULT now(),
    decided_at        timestamptz,
    UNIQUE (source_id, idempotency_key)
);
CREATE INDEX leads_received ON leads (received_at);
CREATE INDEX leads_fingerprint ON leads (lead_type_id, fingerprint, received_at) WHERE fingerprint IS NOT NULL;

CREATE TABLE deliveries (
    id                   uuid PRIMARY KEY,
    lead_id              uuid NOT NULL REFERENCES leads (id),
    client_id            text NOT NULL,
    delivery_account_id  text NOT NULL,
    price                numeric(12, 2) NOT NULL,
    status               text NOT NULL CHECK (status IN ('requested', 'posting', 'succeeded', 'failed')),
    attempts             integer NOT NULL DEFAULT 0,
    reason               text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz
);
CREATE INDEX deliveries_lead ON deliveries (lead_id);
CREATE INDEX deliveries_client ON deliveries (client_id, created_at DESC);
CREATE INDEX deliveries_account ON deliveries (delivery_account_id, created_at);

-- The delivery log buyers and admins read: one row per HTTP attempt.
CREATE TABLE delivery_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   uuid NOT NULL REFERENCES deliveries (id),
    attempt       integer NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer NOT NULL,
    request       text,
    status_code   integer,
    response      text,
    outcome       text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'transient')),
    error         text
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt);
