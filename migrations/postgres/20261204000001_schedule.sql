-- When and whether to send (issue 14): a send time, an expiry and a priority per message, each optional,
-- each with a default so that a plain `INSERT INTO messages (phone_number, content)` still works.
--
-- `send_at`: not sent before it. The claim needs no predicate of its own: a scheduled message is simply
-- due at its `send_at` (`next_attempt_at`), so the due index never holds it among the due ones and a
-- million scheduled rows cost the claim nothing. The API sets both; the trigger below does it for plain
-- SQL, which names only `send_at`.
-- `expires_at`: a message not handed to the provider by then is never sent. The claim moves a due row
-- whose `expires_at` has passed to `expired` (final, with the reason) instead of `sending`.
-- `priority`: 0 high, 1 normal (the default), 2 low. The claim reads one lane per priority from the due
-- index below (each an index scan, each resuming after its own frontier) and takes high before normal
-- before low, a row that has waited longer than PRIORITY_AGING counting one level higher.
ALTER TABLE messages
    ADD COLUMN send_at    timestamptz,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN priority   integer  NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2),
    -- The recipient's IANA time zone for quiet hours, when the sender knows it (else its calling code's).
    ADD COLUMN timezone   text,
    -- A label grouping the messages of one campaign, paused, resumed and cancelled together.
    ADD COLUMN campaign   text CHECK (length(campaign) BETWEEN 1 AND 64);

ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled', 'expired', 'suppressed'));

-- The due index, one lane per priority: `priority = p AND (next_attempt_at, seq) > frontier` is a range
-- of it. Same name as before, so the plan checks that name it still read it.
DROP INDEX messages_pending_due_idx;
CREATE INDEX messages_pending_due_idx ON messages (priority, next_attempt_at, seq) WHERE status = 'pending';
-- GET /messages?status=expired|suppressed, most recent first (both final: updated_at is when).
CREATE INDEX messages_expired_idx ON messages (updated_at DESC, id DESC) WHERE status = 'expired';
CREATE INDEX messages_suppressed_idx ON messages (updated_at DESC, id DESC) WHERE status = 'suppressed';

-- RECIPIENT_DAILY_LIMIT: what a number was sent in the last 24 hours.
CREATE INDEX messages_sent_to_idx ON messages (phone_number, sent_at) WHERE status = 'sent';

-- GET /campaigns counts each campaign's messages by status; cancel finds its pending ones.
CREATE INDEX messages_campaign_idx ON messages (campaign, status) WHERE campaign IS NOT NULL;

-- Campaigns an operator paused (POST /campaigns/{campaign}/pause): the claim skips their rows, on every
-- replica, until the row is deleted (resume). A name may be paused before any of its messages exist.
CREATE TABLE paused_campaigns (
    campaign  text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Replies from phones (POST /inbound), kept with the action each got: opt_out, opt_in or other.
CREATE TABLE inbound_messages (
    id           uuid        PRIMARY KEY,
    from_number  text        NOT NULL,
    content      text        NOT NULL,
    at           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    action       text        NOT NULL CHECK (action IN ('opt_out', 'opt_in', 'other'))
);

-- The numbers that opted out (POST /opt-outs), normalised as a message's `to` is. The claim moves a due
-- message to one of them to `suppressed` (final, never sent) instead of `sending`, whether it was
-- enqueued before or after the opt-out. Keyed by the number: the claim's lookup is one index probe.
CREATE TABLE opt_outs (
    phone_number text        PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A plain INSERT naming `send_at` is due then, not now (the default of `next_attempt_at`).
CREATE FUNCTION messages_due_at_send_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.next_attempt_at := greatest(NEW.next_attempt_at, NEW.send_at);
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_due_at_send_at BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.send_at IS NOT NULL) EXECUTE FUNCTION messages_due_at_send_at();
