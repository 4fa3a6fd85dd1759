-- Status events: the same outbox as migrations/postgres, in SQLite's terms (times in INTEGER µs since the
-- epoch, ids TEXT).
CREATE TABLE status_events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    message_id       TEXT    NOT NULL,
    type             TEXT    NOT NULL
                             CHECK (type IN ('message.sent', 'message.failed', 'message.delivered', 'message.undelivered')),
    payload          TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER,
    last_error       TEXT,
    delivered_at     INTEGER
);
CREATE INDEX status_events_due_idx ON status_events (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX status_events_message_idx ON status_events (message_id, seq) WHERE status = 'pending';
CREATE INDEX status_events_status_idx ON status_events (status, seq DESC);
