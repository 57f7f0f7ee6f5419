-- The Client Portal's own tables.

-- Which portal user a lead belongs to. Lead visibility hangs off it: scope `all` (admins) sees
-- every lead of the client; `downline` the leads assigned to the user or anyone below them; `own`
-- the leads assigned to the user. A lead nobody was assigned is visible to admins only. The
-- assignment pages (and the writers of this table) come with the portal's part 2.
CREATE TABLE lead_assignments (
    client_id    text NOT NULL,
    lead_id      uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES portal_users (id),
    assigned_by  uuid REFERENCES portal_users (id),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, lead_id)
);
CREATE INDEX lead_assignments_user ON lead_assignments (client_id, user_id);

-- What portal users did to a lead that left the portal: an email to the lead's contact, a
-- forward. The id is the notification id minted when the form was rendered, so a form sent
-- twice is one row and one email; the row and its notify.* outbox event commit together.
CREATE TABLE portal_activity (
    id          uuid PRIMARY KEY,
    client_id   text NOT NULL,
    lead_id     uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES portal_users (id),
    kind        text NOT NULL CHECK (kind IN ('lead_contact', 'lead_forward')),
    recipients  text[] NOT NULL,
    subject     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_activity_lead ON portal_activity (client_id, lead_id, created_at DESC);
CREATE INDEX portal_activity_user ON portal_activity (user_id, created_at);
