-- Delivery: leases that fence a post in flight, retry pacing, auto-pause state, and the log of
-- price confirmations.

-- A delivery in 'posting' belongs to the consumer that claimed it until lease_until (database
-- time): only after that may another consumer take it over. not_before holds a delivery released
-- for retry until its delay is over, so an early duplicate message cannot post ahead of time.
ALTER TABLE deliveries ADD COLUMN lease_until timestamptz;
ALTER TABLE deliveries ADD COLUMN not_before timestamptz;
-- The price the account asked before any buyer confirmation (NULL: never changed).
ALTER TABLE deliveries ADD COLUMN account_price numeric(12, 2);

-- One row per delivery account that has ever been posted to. Router reads `paused` to skip
-- paused accounts; `leadwire delivery resume ACCOUNT_ID` clears it.
CREATE TABLE delivery_account_state (
    delivery_account_id   text PRIMARY KEY,
    paused                boolean NOT NULL DEFAULT false,
    paused_at             timestamptz,
    paused_reason         text,
    consecutive_failures  integer NOT NULL DEFAULT 0
);

-- Every confirm-price message and what became of it: applied, ignored (option off) or refused.
CREATE TABLE delivery_price_confirmations (
    id            bigserial PRIMARY KEY,
    delivery_id   uuid NOT NULL REFERENCES deliveries (id),
    message_id    text,
    offered       text,
    outcome       text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'refused')),
    price_before  numeric(12, 2),
    price_after   numeric(12, 2),
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_price_confirmations_delivery ON delivery_price_confirmations (delivery_id, created_at);
