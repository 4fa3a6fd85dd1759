-- An operator may cancel a pending message: a final state like sent and failed.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled'));
CREATE INDEX messages_cancelled_idx ON messages (updated_at DESC, id DESC) WHERE status = 'cancelled';

-- One row per POST to the provider and its result. A claim posts once, so its token keys the row and
-- a result written twice (a retried write) is recorded once.
CREATE TABLE message_attempts (
    claim_token         uuid        PRIMARY KEY,
    message_id          uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt             integer     NOT NULL,
    started_at          timestamptz NOT NULL,
    duration_ms         bigint      NOT NULL,
    http_status         integer,
    outcome             text        NOT NULL,
    error               text,
    provider_message_id text
);
CREATE INDEX message_attempts_message_idx ON message_attempts (message_id, started_at);
