-- Client Portal (portal team, x30 block of the leads range): the indexes its lead list, search and
-- dashboard read through. Plain CREATE INDEX (migrations run in a transaction): on a large
-- existing `leads` table the trigram index takes a while to build and holds writes meanwhile
-- (about a minute per million leads on a 2-core machine; docs/portal.md).

-- "Leads delivered to me", newest first: the list's default order, its date-range filter, the
-- dashboard's per-day counts (an index-only scan) and the exports. Only succeeded deliveries are
-- leads a client received; `completed_at` is when that happened.
CREATE INDEX deliveries_client_received ON deliveries (client_id, completed_at DESC, id DESC)
    WHERE status = 'succeeded';

-- Free-text search over every field value of a lead (values only, not key names), with ILIKE.
-- jsonb_path_query_array and the jsonb -> text cast are immutable, so the expression is indexable;
-- queries must use exactly the same expression (services/portal/queries.py LEAD_TEXT).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX leads_field_values_trgm ON leads
    USING gin ((jsonb_path_query_array(fields, '$.*')::text) gin_trgm_ops);
