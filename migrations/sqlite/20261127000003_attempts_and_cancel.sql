-- An operator may cancel a pending message: a final state like sent and failed. SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt with the new one, rows and rowids kept.
CREATE TABLE messages_next (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE DEFAULT (
                            lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
                                  substr(hex(randomblob(2)), 2) || '-' ||
                                  substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' ||
                                  hex(randomblob(6)))
                        ),
    phone_number        TEXT    NOT NULL,
    content             TEXT    NOT NULL,
    status              TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)),
    lease_owner         TEXT,
    lease_token         TEXT,
    lease_expires_at    INTEGER,
    provider_message_id TEXT,
    last_error          TEXT,
    created_at          INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)),
    updated_at          INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)),
    sent_at             INTEGER,
    CHECK ((status = 'sending') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL AND lease_owner IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
INSERT INTO messages_next SELECT * FROM messages;
DROP TABLE messages;
ALTER TABLE messages_next RENAME TO messages;

CREATE INDEX messages_pending_due_idx ON messages (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX messages_sending_lease_idx ON messages (lease_expires_at) WHERE status = 'sending';
CREATE INDEX messages_sent_idx ON messages (sent_at DESC, id DESC) WHERE status = 'sent';
CREATE INDEX messages_failed_idx ON messages (updated_at DESC, id DESC) WHERE status = 'failed';
CREATE INDEX messages_cancelled_idx ON messages (updated_at DESC, id DESC) WHERE status = 'cancelled';

CREATE TABLE message_attempts (
    claim_token         TEXT    PRIMARY KEY,
    message_id          TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt             INTEGER NOT NULL,
    started_at          INTEGER NOT NULL,
    duration_ms         INTEGER NOT NULL,
    http_status         INTEGER,
    outcome             TEXT    NOT NULL,
    error               TEXT,
    provider_message_id TEXT
);
CREATE INDEX message_attempts_message_idx ON message_attempts (message_id, started_at);
