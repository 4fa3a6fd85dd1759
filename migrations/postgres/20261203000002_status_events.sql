-- Status events (issue 13): the outbox of what the sender's STATUS_WEBHOOK_URL is told. An event is
-- written in the same transaction as the state change it reports, so a crash can neither lose one nor
-- emit one for a change that did not commit; StatusDispatcherActor delivers them, oldest first, one
-- message's events in order.
--   pending    to be delivered when next_attempt_at comes (a delivery in progress holds a lease)
--   delivered  the receiver answered 2xx
--   failed     not acknowledged within STATUS_WEBHOOK_MAX_AGE (POST /events/{id}/retry replays it)
CREATE TABLE status_events (
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The `webhook-id`: the same on every attempt, so a receiver drops repeats.
    id               uuid        NOT NULL UNIQUE,
    message_id       uuid        NOT NULL,
    type             text        NOT NULL
                                 CHECK (type IN ('message.sent', 'message.failed', 'message.delivered', 'message.undelivered')),
    -- The body, fixed when the change committed: every attempt sends the same bytes.
    payload          text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_error       text,
    delivered_at     timestamptz
);
CREATE INDEX status_events_due_idx ON status_events (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX status_events_message_idx ON status_events (message_id, seq) WHERE status = 'pending';
CREATE INDEX status_events_status_idx ON status_events (status, seq DESC);
