-- The pace the whole cluster may send at, shared through this one row (issue 12).
--
-- `next_free_at` is the GCRA "theoretical arrival time" of RATE_LIMIT: the claim statement grants k
-- messages when they fit before now() plus a small burst tolerance, and moves it k / rate later, in the
-- same statement as the claim, so the cap and the claim are one atomic step on every replica. Without a
-- limit in force the claim only reads this row: an unlimited cluster has no hot row.
--
-- A provider's 429 pauses every replica's claims until `throttled_until` (its Retry-After, or a backoff
-- that doubles while 429s keep coming, `pause_seconds`), and cuts the rate to half of what was going
-- through (`cut_rate`, at `cut_at`); the claim lets the cut rate grow back by a tenth of itself per
-- second until RATE_LIMIT, or until it no longer binds.
CREATE TABLE send_rate (
    id              integer          PRIMARY KEY CHECK (id = 1),
    next_free_at    timestamptz      NOT NULL DEFAULT now(),
    throttled_until timestamptz,
    pause_seconds   double precision NOT NULL DEFAULT 0,
    cut_rate        double precision,
    cut_at          timestamptz,
    -- What the last claim drew on the budget; the claim statement reads it back.
    granted         integer          NOT NULL DEFAULT 0
);
INSERT INTO send_rate (id) VALUES (1);
