-- Delivery receipts (issue 13): what the carrier said became of a sent message, and the receipts
-- themselves, kept from the moment they arrive.
--
-- On a message: `delivery_status` is the latest carrier state a receipt reported (NULL: none yet);
-- `delivered` and `undelivered` are final and no later receipt changes them. `delivery_reported_at` is
-- the carrier's time of that receipt (an older intermediate one does not overwrite a newer one),
-- `delivered_at` the carrier's time of delivery, `delivery_error` its code or text for `undelivered`.
ALTER TABLE messages
    ADD COLUMN delivery_status      text CHECK (delivery_status IN ('accepted', 'buffered', 'delivered', 'undelivered')),
    ADD COLUMN delivery_reported_at timestamptz,
    ADD COLUMN delivered_at         timestamptz,
    ADD COLUMN delivery_error       text,
    ADD CONSTRAINT delivered_has_time CHECK ((delivery_status = 'delivered') = (delivered_at IS NOT NULL)),
    ADD CONSTRAINT delivery_has_report CHECK ((delivery_status IS NULL) = (delivery_reported_at IS NULL));

-- A receipt names the provider's id: find its messages (several when the provider repeats ids).
CREATE INDEX messages_provider_message_id_idx ON messages (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- The delivery rate of the last hour and day.
CREATE INDEX messages_delivery_final_idx ON messages (delivery_reported_at)
    WHERE delivery_status IN ('delivered', 'undelivered');

-- Every receipt as it came, stored before the 202 that acknowledges it, then settled once:
--   pending    waiting for its message to be recorded sent (a receipt may beat our flush)
--   applied    moved its message's delivery state
--   ignored    matched its message but changed nothing (a duplicate, or after a final state)
--   ambiguous  its id names several messages: applied to none
--   unmatched  matched nothing within RECEIPT_MATCH_WINDOW
CREATE TABLE receipts (
    seq                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_message_id text        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('accepted', 'buffered', 'delivered', 'undelivered')),
    reported_at         timestamptz NOT NULL,
    error               text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    outcome             text        NOT NULL DEFAULT 'pending'
                                    CHECK (outcome IN ('pending', 'applied', 'ignored', 'ambiguous', 'unmatched')),
    -- The message it matched (applied or ignored); no foreign key: retention may delete the message.
    message_id          uuid,
    settled_at          timestamptz,
    CONSTRAINT settled_has_time CHECK ((outcome = 'pending') = (settled_at IS NULL))
);
-- The applier: pending receipts oldest first, and those of messages just recorded sent.
CREATE INDEX receipts_pending_idx ON receipts (seq) WHERE outcome = 'pending';
CREATE INDEX receipts_pending_provider_idx ON receipts (provider_message_id) WHERE outcome = 'pending';
-- GET /receipts?matched=false.
CREATE INDEX receipts_not_matched_idx ON receipts (seq DESC) WHERE outcome IN ('ambiguous', 'unmatched');
