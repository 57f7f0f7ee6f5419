-- notifier: one send record per notification, and the Client Portal's appointments.

-- The send record makes each notification go out once: it is locked while the email is handed to
-- the SMTP server and marked sent in the same transaction. A crash after the server accepted the
-- email but before the commit leaves it unsent, so the redelivered request sends it again (one
-- repeat at worst, never a loss); every copy carries the same Message-ID.
CREATE TABLE notification_sends (
    notification_id  uuid PRIMARY KEY,
    kind             text NOT NULL,
    recipients       text[] NOT NULL,
    subject          text NOT NULL DEFAULT '',
    message_id       text NOT NULL,              -- the Message-ID header
    status           text NOT NULL CHECK (status IN ('pending', 'sent', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    refused          jsonb,                      -- recipients the server refused while taking the rest
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX notification_sends_created ON notification_sends (created_at);

CREATE TABLE appointments (
    id                   uuid PRIMARY KEY,
    client_id            text NOT NULL,
    lead_id              uuid NOT NULL,
    assigned_user_id     uuid NOT NULL REFERENCES portal_users (id),
    created_by_user_id   uuid,
    title                text NOT NULL DEFAULT '',
    notes                text NOT NULL DEFAULT '',
    starts_at            timestamptz NOT NULL,
    reminder_minutes     integer NOT NULL CHECK (reminder_minutes >= 0),
    status               text NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    -- When the reminder goes out; NULL when there is none (the appointment had already started).
    reminder_due_at      timestamptz,
    -- When a scheduler claimed the reminder and queued its email (outbox, same transaction).
    reminder_queued_at   timestamptz,
    reminder_late        boolean,
    -- Bumped whenever the reminder is re-planned; part of the reminder's notification id, so a
    -- moved appointment is reminded again and a stale reminder can be recognised and dropped.
    reminder_revision    integer NOT NULL DEFAULT 0,
    -- The requested_at of the last command applied: older commands arriving late are ignored.
    last_requested_at    timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointments_reminder_due ON appointments (reminder_due_at)
    WHERE status = 'scheduled' AND reminder_queued_at IS NULL AND reminder_due_at IS NOT NULL;
CREATE INDEX appointments_client ON appointments (client_id, starts_at);
CREATE INDEX appointments_assigned ON appointments (assigned_user_id, starts_at);
