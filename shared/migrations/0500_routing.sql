-- Routing state: the plan is a list of stages (one per client group, in order); accounts that
-- could not be reserved (cap full, no order with room) are remembered so they are not tried again.
ALTER TABLE leads ADD COLUMN skipped jsonb NOT NULL DEFAULT '[]';
ALTER TABLE leads ADD COLUMN max_sales integer NOT NULL DEFAULT 1;
ALTER TABLE leads ADD COLUMN excluded_clients jsonb NOT NULL DEFAULT '[]';

-- Which cap counters a delivery holds, so a failed delivery gives back exactly what it took.
ALTER TABLE deliveries ADD COLUMN cap_keys jsonb NOT NULL DEFAULT '[]';
ALTER TABLE deliveries ADD COLUMN group_id text;

-- Cap counters: one row per account and period window (local time of the client). A sale is
-- counted when it is reserved (atomic `used < cap` update under the row lock) and given back
-- when the delivery fails, so concurrent routers can never push a count past its cap.
CREATE TABLE cap_usage (
    delivery_account_id  text NOT NULL,
    period               text NOT NULL CHECK (period IN ('hourly', 'daily', 'weekly', 'monthly')),
    period_start         timestamp NOT NULL,
    used                 integer NOT NULL CHECK (used >= 0),
    PRIMARY KEY (delivery_account_id, period, period_start)
);

-- Round robin and weighted turns, shared by every router replica.
CREATE TABLE group_rotation (
    group_id  text PRIMARY KEY,
    counter   bigint NOT NULL
);
