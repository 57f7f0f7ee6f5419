-- Client Portal (portal team, x30 block of the notifier range): appointments made per day, for
-- the dashboard's "leads and appointments" report.
CREATE INDEX appointments_client_created ON appointments (client_id, created_at);
