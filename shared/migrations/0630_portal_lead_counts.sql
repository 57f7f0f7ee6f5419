-- Client Portal dashboard (B1–B2): leads received per day, counted ahead. The chart's count read
-- every succeeded delivery of this month and last month (100,000 index entries for a client that
-- buys 1,700 a day: 45–120 ms at load, the slowest part of the dashboard). It now sums at most a
-- few thousand rows of this table.
--
-- Rows per client and 15-minute bucket (UTC) whose sum is how many portal_leads rows (succeeded
-- deliveries) completed in that bucket. Every time zone in use today is offset from UTC by a
-- multiple of 15 minutes, so each local day [midnight, next midnight) is a whole number of
-- buckets and the per-day sums are exact in the client's zone, DST days included. (A day boundary
-- off the 15-minute grid — an old local mean time — is counted from portal_leads instead:
-- services/portal/queries.py leads_per_day.)
--
-- Kept by a trigger on portal_leads in the transaction that writes the row (so in the delivery's
-- own transaction, through 0620's triggers), into a row of that transaction's own: the key holds
-- the writing transaction's id. So a delivery never waits for another one and no two ever
-- deadlock on a count (one shared counter row per client and bucket did both: concurrent
-- deliveries to one client queued on it until each commit, and multi-client batches deadlocked),
-- and no count is lost: a transaction only ever adds to its own row. The portal merges the rows of
-- finished transactions every minute (portal_lead_counts_merge, services/portal/web.py), so a
-- bucket is about one row; until then the reader simply sums more of them.

CREATE TABLE portal_lead_counts (
    client_id  text NOT NULL,
    bucket     timestamptz NOT NULL,
    txid       bigint NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (client_id, bucket, txid)
);

CREATE FUNCTION portal_lead_bucket(p_at timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT date_bin('15 minutes', p_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')
$$;

CREATE FUNCTION portal_lead_count(p_client text, p_at timestamptz, p_delta bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO portal_lead_counts AS c (client_id, bucket, txid, n)
    VALUES (p_client, portal_lead_bucket(p_at), txid_current(), p_delta)
    ON CONFLICT (client_id, bucket, txid) DO UPDATE SET n = c.n + EXCLUDED.n
$$;

-- Each bucket's rows of committed transactions become one row (keyed by the merging transaction):
-- the DELETE takes only rows its snapshot sees, so a delivery still in flight keeps its row, and
-- two merges at once (several portal processes) never count a row twice — the second finds the
-- rows the first deleted gone. Returns the number of rows merged away.
CREATE FUNCTION portal_lead_counts_merge() RETURNS bigint LANGUAGE sql AS $$
    WITH crowded AS (
        SELECT client_id, bucket FROM portal_lead_counts GROUP BY 1, 2 HAVING count(*) > 1
    ), taken AS (
        DELETE FROM portal_lead_counts c USING crowded
        WHERE c.client_id = crowded.client_id AND c.bucket = crowded.bucket
        RETURNING c.client_id, c.bucket, c.n
    ), merged AS (
        INSERT INTO portal_lead_counts (client_id, bucket, txid, n)
        SELECT client_id, bucket, txid_current(), sum(n) FROM taken GROUP BY 1, 2 HAVING sum(n) <> 0
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM taken) - (SELECT count(*) FROM merged)
$$;

CREATE FUNCTION portal_lead_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM portal_lead_count(OLD.client_id, OLD.completed_at, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM portal_lead_count(NEW.client_id, NEW.completed_at, 1);
    END IF;
    RETURN NULL;
END
$$;

-- 0620's triggers rewrite a row on every succeeded-delivery update (ON CONFLICT DO UPDATE): only a
-- change of its client or completion time moves a count.
CREATE TRIGGER portal_lead_counts_on_insert AFTER INSERT ON portal_leads
    FOR EACH ROW EXECUTE FUNCTION portal_lead_counts_follow();
CREATE TRIGGER portal_lead_counts_on_delete AFTER DELETE ON portal_leads
    FOR EACH ROW EXECUTE FUNCTION portal_lead_counts_follow();
CREATE TRIGGER portal_lead_counts_on_update AFTER UPDATE OF client_id, completed_at ON portal_leads
    FOR EACH ROW WHEN (OLD.client_id IS DISTINCT FROM NEW.client_id OR OLD.completed_at IS DISTINCT FROM NEW.completed_at)
    EXECUTE FUNCTION portal_lead_counts_follow();

-- Backfill after the triggers exist: CREATE TRIGGER locked portal_leads against writes until this
-- migration commits, so no delivery is counted twice or missed.
INSERT INTO portal_lead_counts (client_id, bucket, txid, n)
SELECT client_id, portal_lead_bucket(completed_at), txid_current(), count(*)
FROM portal_leads GROUP BY 1, 2;
ANALYZE portal_lead_counts;
