-- Client Portal: its own, client-scoped copy of "the leads delivered to me", shaped for the lead
-- list (C1–C6) at scale. Reading router's `leads` joined to `deliveries` worked for the default
-- order, but a search had to intersect a trigram index over EVERY client's leads, and a sort by a
-- lead field read and sorted every lead of the client in the range (over a second at 100,000).
--
-- One row per succeeded delivery, kept by triggers on `deliveries` and `leads` in the same
-- transaction as the delivery's own write (router and delivery code are unchanged; a succeeded
-- delivery costs one more row insert). It holds what the list filters and orders by:
--   * the delivery time, lead type and price, each indexed behind client_id;
--   * `search`: the lead's field values as one text (the same expression as leads' own trigram
--     index of 0030), in a GIN index led by client_id (btree_gin), so a common term is matched
--     among this client's leads only;
--   * t1..t5 (text) and n1..n2 (numeric): the client's list columns as typed sort keys, each
--     indexed as (client_id, key, completed_at, delivery_id) — the list's keyset order. Which
--     field sits in which key column is `portal_sort_columns`, written by the portal from the
--     catalog (services/portal/rules.py sort_columns; reconciled by queries.ensure_sort_columns).
-- The keys are never NULL once a client's columns are set: a missing text value is '' and a
-- value that is not a number is -1e30, exactly as the list sorted before, so (key, completed_at,
-- delivery_id) orders every row and keyset pages stay exact with ties.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- Which lead field is in which key column, per client. `catalog_version` is the catalog the
-- portal derived it from: a portal process still on an older catalog never overwrites it.
CREATE TABLE portal_sort_columns (
    client_id        text NOT NULL,
    key_column       text NOT NULL CHECK (key_column IN ('t1', 't2', 't3', 't4', 't5', 'n1', 'n2')),
    field            text NOT NULL,
    catalog_version  bigint NOT NULL,
    PRIMARY KEY (client_id, key_column)
);

CREATE TABLE portal_leads (
    delivery_id   uuid PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    client_id     text NOT NULL,
    lead_id       uuid NOT NULL,
    completed_at  timestamptz NOT NULL,
    lead_type_id  text NOT NULL,
    price         numeric(12, 2) NOT NULL,
    search        text NOT NULL,
    t1 text, t2 text, t3 text, t4 text, t5 text,
    n1 numeric, n2 numeric
);

-- The sort keys of a lead's fields under a client's key columns (all NULL while it has none).
-- Text: the value as text ('' when missing); numeric: the value when it is a number, else -1e30
-- (old data that is not a number sorts first, as one group, instead of failing). PL/pgSQL, not
-- SQL: its statement's plan is cached for the session, where a SQL function called per row was
-- planned on every call (measured: the trigger cost 2.6x as much).
CREATE FUNCTION portal_sort_keys(
    p_client text, p_fields jsonb,
    OUT t1 text, OUT t2 text, OUT t3 text, OUT t4 text, OUT t5 text, OUT n1 numeric, OUT n2 numeric
) LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT max(CASE c.key_column WHEN 't1' THEN coalesce(p_fields ->> c.field, '') END),
           max(CASE c.key_column WHEN 't2' THEN coalesce(p_fields ->> c.field, '') END),
           max(CASE c.key_column WHEN 't3' THEN coalesce(p_fields ->> c.field, '') END),
           max(CASE c.key_column WHEN 't4' THEN coalesce(p_fields ->> c.field, '') END),
           max(CASE c.key_column WHEN 't5' THEN coalesce(p_fields ->> c.field, '') END),
           max(CASE c.key_column WHEN 'n1' THEN coalesce(CASE WHEN p_fields ->> c.field ~ '^-?[0-9]+(\.[0-9]+)?$'
               THEN (p_fields ->> c.field)::numeric END, -1e30) END),
           max(CASE c.key_column WHEN 'n2' THEN coalesce(CASE WHEN p_fields ->> c.field ~ '^-?[0-9]+(\.[0-9]+)?$'
               THEN (p_fields ->> c.field)::numeric END, -1e30) END)
    INTO t1, t2, t3, t4, t5, n1, n2
    FROM portal_sort_columns c WHERE c.client_id = p_client;
END
$$;

-- Keying a row by the client's key columns takes this client's advisory lock (620, hashtext of the
-- client id) in shared mode, until the transaction ends; the portal re-keys a client's rows under
-- the same lock in exclusive mode (queries.ensure_sort_columns). So a re-key waits for deliveries
-- in flight that read the old columns, and the client's next ones wait for the re-key: no row ends
-- up keyed by columns other than the stored ones. Other clients' deliveries never wait.
CREATE FUNCTION portal_sort_lock_shared(p_client text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared(620, hashtext(p_client))
$$;

-- A delivery became (or stays) succeeded: its row, written afresh; it stopped being one: gone.
CREATE FUNCTION portal_leads_from_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'succeeded' AND NEW.completed_at IS NOT NULL THEN
        PERFORM portal_sort_lock_shared(NEW.client_id);
        INSERT INTO portal_leads AS pl (delivery_id, client_id, lead_id, completed_at, lead_type_id, price, search,
                                        t1, t2, t3, t4, t5, n1, n2)
        SELECT NEW.id, NEW.client_id, NEW.lead_id, NEW.completed_at, l.lead_type_id, NEW.price,
               jsonb_path_query_array(l.fields, '$.*')::text, k.t1, k.t2, k.t3, k.t4, k.t5, k.n1, k.n2
        FROM leads l, portal_sort_keys(NEW.client_id, l.fields) k
        WHERE l.id = NEW.lead_id
        ON CONFLICT (delivery_id) DO UPDATE SET
            client_id = EXCLUDED.client_id, lead_id = EXCLUDED.lead_id, completed_at = EXCLUDED.completed_at,
            lead_type_id = EXCLUDED.lead_type_id, price = EXCLUDED.price, search = EXCLUDED.search,
            t1 = EXCLUDED.t1, t2 = EXCLUDED.t2, t3 = EXCLUDED.t3, t4 = EXCLUDED.t4, t5 = EXCLUDED.t5,
            n1 = EXCLUDED.n1, n2 = EXCLUDED.n2;
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM portal_leads WHERE delivery_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

-- Router inserts deliveries as 'requested' and delivery moves them through 'posting': the WHEN
-- clauses keep those writes from calling the function at all.
CREATE TRIGGER portal_leads_on_insert AFTER INSERT ON deliveries
    FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION portal_leads_from_delivery();
CREATE TRIGGER portal_leads_on_update AFTER UPDATE OF status, completed_at, price, client_id, lead_id ON deliveries
    FOR EACH ROW WHEN (NEW.status = 'succeeded' OR OLD.status = 'succeeded')
    EXECUTE FUNCTION portal_leads_from_delivery();

-- A lead's fields or type changed after it was sold (an operator's correction): its rows follow.
CREATE FUNCTION portal_leads_from_lead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM portal_sort_lock_shared(pl.client_id) FROM portal_leads pl WHERE pl.lead_id = NEW.id;
    UPDATE portal_leads pl SET lead_type_id = NEW.lead_type_id,
        search = jsonb_path_query_array(NEW.fields, '$.*')::text,
        (t1, t2, t3, t4, t5, n1, n2) = (SELECT k.t1, k.t2, k.t3, k.t4, k.t5, k.n1, k.n2
                                        FROM portal_sort_keys(pl.client_id, NEW.fields) k)
    WHERE pl.lead_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER portal_leads_on_lead_update AFTER UPDATE OF fields, lead_type_id ON leads
    FOR EACH ROW EXECUTE FUNCTION portal_leads_from_lead();

-- Backfill: every succeeded delivery there is (sort keys come when the portal first sets the
-- client's key columns). Indexes are built after the rows: faster than row by row.
INSERT INTO portal_leads (delivery_id, client_id, lead_id, completed_at, lead_type_id, price, search)
SELECT d.id, d.client_id, d.lead_id, d.completed_at, l.lead_type_id, d.price,
       jsonb_path_query_array(l.fields, '$.*')::text
FROM deliveries d JOIN leads l ON l.id = d.lead_id
WHERE d.status = 'succeeded' AND d.completed_at IS NOT NULL;

SET LOCAL maintenance_work_mem = '256MB';
-- The list's default order (newest first: scanned backwards), its date range and the count.
CREATE INDEX portal_leads_received ON portal_leads (client_id, completed_at, delivery_id);
-- Filter by lead type, and sort by it.
CREATE INDEX portal_leads_type ON portal_leads (client_id, lead_type_id, completed_at, delivery_id);
CREATE INDEX portal_leads_price ON portal_leads (client_id, price, completed_at, delivery_id);
-- A lead's rows (the leads trigger; "is this lead assigned to me" joins).
CREATE INDEX portal_leads_lead ON portal_leads (lead_id);
-- Free text within one client: GIN intersects client_id's entry with the trigrams'.
CREATE INDEX portal_leads_search ON portal_leads USING gin (client_id, search gin_trgm_ops);
CREATE INDEX portal_leads_t1 ON portal_leads (client_id, t1, completed_at, delivery_id);
CREATE INDEX portal_leads_t2 ON portal_leads (client_id, t2, completed_at, delivery_id);
CREATE INDEX portal_leads_t3 ON portal_leads (client_id, t3, completed_at, delivery_id);
CREATE INDEX portal_leads_t4 ON portal_leads (client_id, t4, completed_at, delivery_id);
CREATE INDEX portal_leads_t5 ON portal_leads (client_id, t5, completed_at, delivery_id);
CREATE INDEX portal_leads_n1 ON portal_leads (client_id, n1, completed_at, delivery_id);
CREATE INDEX portal_leads_n2 ON portal_leads (client_id, n2, completed_at, delivery_id);
ANALYZE portal_leads;
