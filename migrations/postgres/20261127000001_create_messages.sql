-- Messages waiting for, going through, or done with delivery to the provider.
-- Another system may enqueue with a plain `INSERT INTO messages (phone_number, content) VALUES (...)`:
-- every other column has a default.
CREATE TABLE messages (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Insertion order: rows of one multi-row INSERT share created_at, so FIFO needs a sequence.
    seq                 bigint      GENERATED ALWAYS AS IDENTITY,
    phone_number        text        NOT NULL,
    content             text        NOT NULL,
    status              text        NOT NULL DEFAULT 'pending'
                                    CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    -- Claims so far; the claim increments it, so a crash mid-send still counts as an attempt.
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    -- The lease of the claim in progress: set together when status becomes 'sending', cleared when it leaves.
    lease_owner         text,
    lease_token         uuid,
    lease_expires_at    timestamptz,
    provider_message_id text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    CONSTRAINT sending_has_lease CHECK (
        (status = 'sending') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL AND lease_owner IS NOT NULL)
    ),
    CONSTRAINT sent_has_time CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);

-- The claim: due pending rows, oldest first (a retry queues behind rows that came due before it).
CREATE INDEX messages_pending_due_idx ON messages (next_attempt_at, seq) WHERE status = 'pending';
-- The rescuer: claims whose lease ran out.
CREATE INDEX messages_sending_lease_idx ON messages (lease_expires_at) WHERE status = 'sending';
-- The sent list: newest first, keyset on (sent_at, id).
CREATE INDEX messages_sent_idx ON messages (sent_at DESC, id DESC) WHERE status = 'sent';
