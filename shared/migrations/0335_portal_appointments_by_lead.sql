-- Client Portal (portal part 2b, x35 block of the notifier range): a lead's appointments, for the
-- Appointments panel of the lead page (D7).
CREATE INDEX appointments_client_lead ON appointments (client_id, lead_id, starts_at);
