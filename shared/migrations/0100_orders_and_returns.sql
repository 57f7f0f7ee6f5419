-- Orders: live figures per period, the per-sale charge ledger, and archived periods.
-- Returns: one row per return request, and the client balance credits that approvals create.

-- `reserved` is what deliveries in flight have taken and not yet settled: room for a new sale is
-- total - received - reserved, so concurrent sales can never oversell. `period` counts renewals;
-- a renewed order's dates live in period_start/period_end (a catalog apply rewrites start_date and
-- end_date from the file, and must not undo a renewal).
ALTER TABLE orders ADD COLUMN reserved numeric(12, 2) NOT NULL DEFAULT 0 CHECK (reserved >= 0);
ALTER TABLE orders ADD COLUMN period integer NOT NULL DEFAULT 1;
ALTER TABLE orders ADD COLUMN period_start date;
ALTER TABLE orders ADD COLUMN period_end date;
ALTER TABLE orders ADD COLUMN filled_at timestamptz;
ALTER TABLE orders ADD COLUMN closed_reason text;

-- One row per delivery that an order paid for. `amount` is what the sale took from the order
-- (1 lead, or dollars); `price` is the sale price (final once confirmed).
CREATE TABLE order_charges (
    delivery_id  uuid PRIMARY KEY,
    order_id     text NOT NULL REFERENCES orders (id),
    client_id    text NOT NULL,
    period       integer NOT NULL,
    amount       numeric(12, 2) NOT NULL CHECK (amount >= 0),
    price        numeric(12, 2) NOT NULL,
    status       text NOT NULL CHECK (status IN ('reserved', 'confirmed', 'released', 'credited')),
    reserved_at  timestamptz NOT NULL,
    settled_at   timestamptz,
    credited_at  timestamptz
);
CREATE INDEX order_charges_order ON order_charges (order_id, period);

-- A finished period of a renewing order, with its figures as they stood at renewal (later
-- credits from returns of that period's leads are applied here).
CREATE TABLE order_periods (
    order_id     text NOT NULL REFERENCES orders (id),
    period       integer NOT NULL,
    started_on   date NOT NULL,
    ended_on     date,
    total        numeric(12, 2) NOT NULL,
    received     numeric(12, 2) NOT NULL,
    cost         numeric(12, 2) NOT NULL,
    amount_paid  numeric(12, 2) NOT NULL,
    filled_at    timestamptz NOT NULL,
    PRIMARY KEY (order_id, period)
);

CREATE TABLE order_payments (
    id           bigserial PRIMARY KEY,
    order_id     text NOT NULL REFERENCES orders (id),
    period       integer NOT NULL,
    amount       numeric(12, 2) NOT NULL,
    note         text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE returns (
    id                   uuid PRIMARY KEY,
    client_id            text NOT NULL,
    lead_id              uuid NOT NULL,
    delivery_id          uuid,
    delivery_account_id  text,
    order_id             text,
    reason               text NOT NULL,
    comment              text,
    status               text NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    -- Why it was decided: cap_exceeded, window_expired, invalid_reason, not_delivered,
    -- already_returned (denied at once by a rule), auto_approved, or admin.
    decision_reason      text,
    note                 text,
    requested_by         text,
    decided_by           text,
    -- A request denied at once by a rule does not hold the lead: the client may ask again.
    holds_lead           boolean NOT NULL,
    credit               numeric(12, 2) NOT NULL DEFAULT 0,
    delivered_at         timestamptz,
    requested_at         timestamptz NOT NULL,
    decided_at           timestamptz
);
CREATE UNIQUE INDEX returns_once_per_lead ON returns (client_id, lead_id) WHERE holds_lead;
CREATE INDEX returns_client ON returns (client_id, requested_at DESC);
CREATE INDEX returns_delivery_account ON returns (delivery_account_id, delivered_at) WHERE holds_lead;
CREATE INDEX returns_order ON returns (order_id, delivered_at) WHERE holds_lead;

CREATE TABLE client_balances (
    client_id   text PRIMARY KEY,
    balance     numeric(12, 2) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every change to a client balance; return_id makes a credit happen once per return.
CREATE TABLE client_balance_entries (
    id          bigserial PRIMARY KEY,
    client_id   text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('return_credit')),
    return_id   uuid UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX client_balance_entries_client ON client_balance_entries (client_id, created_at);
