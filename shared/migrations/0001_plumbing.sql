-- Transactional outbox: events are written in the same transaction as the state change that
-- causes them and relayed to RabbitMQ afterwards. The row id becomes the AMQP message_id.
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,
    exchange      text NOT NULL,            -- logical exchange key ('events', 'inbound') or '' for a queue
    routing_key   text NOT NULL,
    payload       jsonb NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    correlation_id text,
    -- Replies to a requester's reply-to queue may have no one listening any more: they are
    -- published without `mandatory` so an absent requester cannot block the relay.
    is_reply      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_created ON outbox (created_at);

-- Idempotent consumers: a (consumer, message_id) row is claimed in the same transaction as the
-- work the message causes, so a redelivered message finds its claim and changes nothing.
CREATE TABLE inbox (
    consumer    text NOT NULL,
    message_id  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Every message a consumer could not process, with the reason; the same message sits in the
-- queue's dead-letter queue for replay.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    queue       text NOT NULL,
    message_id  text,
    error       text NOT NULL,
    body        bytea,
    headers     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, created_at);
