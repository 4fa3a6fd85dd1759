-- The same table as migrations/postgres, in SQLite's terms:
-- ids are UUID text, times are INTEGER microseconds since the Unix epoch (UTC), so that they compare
-- and sort as numbers whichever process wrote them.
-- (julianday rather than unixepoch('subsec'): the sqlite3 shell of Debian 12 predates 'subsec'.)
-- Another program may enqueue with a plain `INSERT INTO messages (phone_number, content) VALUES (...)`.
CREATE TABLE messages (
    -- Insertion order (the rowid): FIFO among rows due at the same time.
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
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
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

CREATE INDEX messages_pending_due_idx ON messages (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX messages_sending_lease_idx ON messages (lease_expires_at) WHERE status = 'sending';
CREATE INDEX messages_sent_idx ON messages (sent_at DESC, id DESC) WHERE status = 'sent';
