-- The catalog (configuration-as-code). Each apply stores the whole validated document as a new
-- version and projects it into one table per entity, in one transaction. Services keep the
-- latest document in memory and reload when `catalog_changed` is notified.
CREATE TABLE catalog_versions (
    version     bigserial PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user,
    digest      text NOT NULL,
    document    jsonb NOT NULL
);

CREATE TABLE lead_types (
    id    text PRIMARY KEY,
    name  text NOT NULL,
    spec  jsonb NOT NULL
);

CREATE TABLE lead_sources (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    active  boolean NOT NULL,
    spec    jsonb NOT NULL
);

CREATE TABLE clients (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    active        boolean NOT NULL,
    time_zone     text NOT NULL,
    email         text,
    external_ref  text,
    spec          jsonb NOT NULL
);

CREATE TABLE client_groups (
    id        text PRIMARY KEY,
    name      text NOT NULL,
    position  integer NOT NULL,
    spec      jsonb NOT NULL
);

CREATE TABLE delivery_accounts (
    id            text PRIMARY KEY,
    client_id     text NOT NULL REFERENCES clients (id),
    lead_type_id  text NOT NULL REFERENCES lead_types (id),
    active        boolean NOT NULL,
    price         numeric(12, 2) NOT NULL,
    spec          jsonb NOT NULL
);
CREATE INDEX delivery_accounts_client ON delivery_accounts (client_id);

-- Orders carry money, so they are never deleted by a catalog apply: an order missing from a file
-- is kept as it is (close it with status: closed). Live figures (received, paid) are kept here,
-- next to the definition, and are not overwritten by an apply.
CREATE TABLE orders (
    id              text PRIMARY KEY,
    client_id       text NOT NULL REFERENCES clients (id),
    order_type      text NOT NULL CHECK (order_type IN ('lead_quantity', 'dollar_amount')),
    total           numeric(12, 2) NOT NULL CHECK (total >= 0),
    status          text NOT NULL CHECK (status IN ('open', 'paused', 'closed')),
    start_date      date NOT NULL,
    end_date        date,
    renewal         text NOT NULL CHECK (renewal IN ('on_fill', 'close_at_end', 'none')),
    auto_charge     boolean NOT NULL DEFAULT false,
    received        numeric(12, 2) NOT NULL DEFAULT 0 CHECK (received >= 0),
    cost            numeric(12, 2) NOT NULL DEFAULT 0,
    amount_paid     numeric(12, 2) NOT NULL DEFAULT 0,
    spec            jsonb NOT NULL,
    CHECK (received <= total)
);
CREATE INDEX orders_client ON orders (client_id);
