-- Delivery receipts: the same columns and table as migrations/postgres, in SQLite's terms (times in
-- INTEGER µs since the epoch, ids TEXT). SQLite adds a column with its CHECK but no table constraint,
-- so each check sits on a column of its own.
ALTER TABLE messages ADD COLUMN delivery_status TEXT
    CHECK (delivery_status IN ('accepted', 'buffered', 'delivered', 'undelivered'));
ALTER TABLE messages ADD COLUMN delivery_reported_at INTEGER
    CHECK ((delivery_status IS NULL) = (delivery_reported_at IS NULL));
ALTER TABLE messages ADD COLUMN delivered_at INTEGER
    CHECK ((delivery_status = 'delivered') = (delivered_at IS NOT NULL));
ALTER TABLE messages ADD COLUMN delivery_error TEXT;

CREATE INDEX messages_provider_message_id_idx ON messages (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_delivery_final_idx ON messages (delivery_reported_at)
    WHERE delivery_status IN ('delivered', 'undelivered');

CREATE TABLE receipts (
    seq                 INTEGER PRIMARY KEY,
    provider_message_id TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('accepted', 'buffered', 'delivered', 'undelivered')),
    reported_at         INTEGER NOT NULL,
    error               TEXT,
    received_at         INTEGER NOT NULL,
    outcome             TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (outcome IN ('pending', 'applied', 'ignored', 'ambiguous', 'unmatched')),
    message_id          TEXT,
    settled_at          INTEGER,
    CHECK ((outcome = 'pending') = (settled_at IS NULL))
);
CREATE INDEX receipts_pending_idx ON receipts (seq) WHERE outcome = 'pending';
CREATE INDEX receipts_pending_provider_idx ON receipts (provider_message_id) WHERE outcome = 'pending';
CREATE INDEX receipts_not_matched_idx ON receipts (seq DESC) WHERE outcome IN ('ambiguous', 'unmatched');
