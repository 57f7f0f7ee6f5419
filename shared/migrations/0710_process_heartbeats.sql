-- Which catalog version each service process has loaded (the admin console's Processes page):
-- every process upserts its row every few seconds (shared/service.py, `health.report`) and deletes
-- it when it stops cleanly. A row that stops being refreshed is a process that died or hangs.
CREATE TABLE process_heartbeats (
    process_id       text PRIMARY KEY,   -- <service>@<host>:<pid>, as Runtime.consumer_id
    service          text NOT NULL,
    catalog_version  integer NOT NULL,
    started_at       timestamptz NOT NULL,
    seen_at          timestamptz NOT NULL
);
