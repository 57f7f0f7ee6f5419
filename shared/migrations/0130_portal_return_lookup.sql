-- Client Portal (portal team, x30 block of the returns range): a lead's latest return request,
-- looked up per row of the lead list and on the lead page.
CREATE INDEX returns_client_lead ON returns (client_id, lead_id, requested_at DESC);
