-- Portal users: the people of a client who log into the Client Portal. Created here (ahead of
-- portal_auth's own migrations) because notifier reads it for new-lead notifications and the
-- portal's lead assignment and downline views hang off it.
CREATE TABLE portal_users (
    id                uuid PRIMARY KEY,
    client_id         text NOT NULL,
    email             text NOT NULL,
    name              text NOT NULL DEFAULT '',
    password_hash     text,                      -- argon2id; NULL until a password is set
    is_admin          boolean NOT NULL DEFAULT false,   -- Admin Access: every area, manages users
    view_downline     boolean NOT NULL DEFAULT false,   -- sees leads of the users below them
    enabled           boolean NOT NULL DEFAULT true,
    notify_new_leads  boolean NOT NULL DEFAULT false,   -- the portal's new lead notification setting
    parent_user_id    uuid REFERENCES portal_users (id),  -- the user above this one (downline)
    phone             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX portal_users_email ON portal_users (lower(email));
CREATE INDEX portal_users_client ON portal_users (client_id);
