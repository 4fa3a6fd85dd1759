-- When and whether to send (issue 14): see migrations/postgres, same meaning. Times in µs.
-- SQLite cannot alter a CHECK constraint (new final states, `expired` and `suppressed`), so the table is
-- rebuilt with the new columns, rows and rowids kept. Dropping the old table deletes its rows first, and with them, by
-- `ON DELETE CASCADE`, their history: the history is set aside and put back around the rebuild.
CREATE TEMP TABLE attempts_kept AS SELECT * FROM message_attempts;

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
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled', 'expired',
                                                  'suppressed')),
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
    -- The delivery columns of 20261203000001_receipts, kept through the rebuild.
    delivery_status     TEXT    CHECK (delivery_status IN ('accepted', 'buffered', 'delivered', 'undelivered')),
    delivery_reported_at INTEGER CHECK ((delivery_status IS NULL) = (delivery_reported_at IS NULL)),
    delivered_at        INTEGER CHECK ((delivery_status = 'delivered') = (delivered_at IS NOT NULL)),
    delivery_error      TEXT,
    send_at             INTEGER,
    expires_at          INTEGER,
    priority            INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2),
    timezone            TEXT,
    campaign            TEXT CHECK (length(campaign) BETWEEN 1 AND 64),
    CHECK ((status = 'sending') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL AND lease_owner IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
INSERT INTO messages_next (seq, id, phone_number, content, status, attempts, next_attempt_at, lease_owner, lease_token,
                           lease_expires_at, provider_message_id, last_error, created_at, updated_at, sent_at,
                           delivery_status, delivery_reported_at, delivered_at, delivery_error)
SELECT seq, id, phone_number, content, status, attempts, next_attempt_at, lease_owner, lease_token,
       lease_expires_at, provider_message_id, last_error, created_at, updated_at, sent_at,
       delivery_status, delivery_reported_at, delivered_at, delivery_error
  FROM messages;
DROP TABLE messages;
ALTER TABLE messages_next RENAME TO messages;
INSERT INTO message_attempts SELECT * FROM attempts_kept;
DROP TABLE attempts_kept;

CREATE INDEX messages_pending_due_idx ON messages (priority, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX messages_sending_lease_idx ON messages (lease_expires_at) WHERE status = 'sending';
CREATE INDEX messages_sent_idx ON messages (sent_at DESC, id DESC) WHERE status = 'sent';
CREATE INDEX messages_failed_idx ON messages (updated_at DESC, id DESC) WHERE status = 'failed';
CREATE INDEX messages_cancelled_idx ON messages (updated_at DESC, id DESC) WHERE status = 'cancelled';
CREATE INDEX messages_expired_idx ON messages (updated_at DESC, id DESC) WHERE status = 'expired';
CREATE INDEX messages_suppressed_idx ON messages (updated_at DESC, id DESC) WHERE status = 'suppressed';

CREATE INDEX messages_sent_to_idx ON messages (phone_number, sent_at) WHERE status = 'sent';
CREATE INDEX messages_provider_message_id_idx ON messages (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_delivery_final_idx ON messages (delivery_reported_at)
    WHERE delivery_status IN ('delivered', 'undelivered');
CREATE INDEX messages_campaign_idx ON messages (campaign, status) WHERE campaign IS NOT NULL;

-- Replies, paused campaigns and the numbers that opted out: see migrations/postgres. Times in µs.
CREATE TABLE inbound_messages (
    id           TEXT    PRIMARY KEY,
    from_number  TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    action       TEXT    NOT NULL CHECK (action IN ('opt_out', 'opt_in', 'other'))
);
CREATE TABLE paused_campaigns (
    campaign  TEXT    PRIMARY KEY,
    paused_at INTEGER NOT NULL
);
CREATE TABLE opt_outs (
    phone_number TEXT    PRIMARY KEY,
    created_at   INTEGER NOT NULL
);

-- A plain INSERT naming `send_at` is due then, not now (SQLite's triggers cannot change NEW: the row is
-- moved right after). The service's own inserts set `next_attempt_at` themselves and skip it.
CREATE TRIGGER messages_due_at_send_at AFTER INSERT ON messages
    WHEN NEW.send_at IS NOT NULL AND NEW.send_at > NEW.next_attempt_at
BEGIN
    UPDATE messages SET next_attempt_at = NEW.send_at WHERE seq = NEW.seq;
END;
