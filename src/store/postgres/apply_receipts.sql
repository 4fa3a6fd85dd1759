-- Settles pending receipts $1 against messages $2, pairwise (receipt $1[i] against message $2[i], the one
-- its provider id names; no message twice, so each moves at most once), in one statement (see
-- store/receipts.rs). The receipt rows are locked first, in seq order, skipping those another replica is
-- settling: they are its to settle, and stay pending for the next sweep if it fails. Replicas sweeping the
-- same backlog so divide it instead of queuing behind each other's batch. A message moves only forward:
-- not once final, an intermediate report only when it says something new and is not older than the one
-- in force; and only when it is `sent` under the receipt's provider id and no other message has that id.
-- The message is found by its key alone. "Sent under that id" is asked as `sent_at IS NOT NULL` (the same,
-- by the `sent_has_time` check) and `IS NOT DISTINCT FROM` (the receipt's id is never NULL), not as
-- `status = 'sent'` and `=`: those would let the planner read a partial index (of sent rows, of rows with
-- a provider id) that, after a fast drain, its statistics still count as empty. It did, and scanned every
-- sent message against each receipt: 25 s for 1,000 receipts over 100,000 sent rows.
-- Answers, per receipt that was pending: its seq, its outcome and, when applied, the message's delivery
-- state as it left it (status, delivered_at, carrier error, provider id), for the event that reports it.
-- A receipt whose message is not sent under its id (a cache entry of another deployment, or of a message
-- the provider gave the same id before ours is recorded) is `ignored` by no one: it answers `pending`,
-- is left as it was, and the applier asks the database which message, if any, it names.
WITH r AS (
    SELECT rc.seq, rc.provider_message_id, rc.status, rc.reported_at, rc.error, i.message_id
      FROM receipts rc
      JOIN unnest($1::bigint[], $2::uuid[]) AS i(seq, message_id) ON i.seq = rc.seq
     WHERE rc.outcome = 'pending'
     ORDER BY rc.seq
       FOR UPDATE OF rc SKIP LOCKED
), matched AS (
    -- The receipts whose message is sent under their id; the others stay pending (below), whatever else
    -- has the id: the applier matches them again in the database.
    SELECT r.* FROM r JOIN messages m ON m.id = r.message_id
     WHERE m.sent_at IS NOT NULL AND m.provider_message_id IS NOT DISTINCT FROM r.provider_message_id
), ambiguous AS (
    SELECT r.seq FROM matched r
     WHERE EXISTS (SELECT 1 FROM messages o
                    WHERE o.provider_message_id = r.provider_message_id AND o.id <> r.message_id)
), applied AS (
    UPDATE messages m
       SET delivery_status = r.status,
           delivery_reported_at = r.reported_at,
           delivered_at = CASE WHEN r.status = 'delivered' THEN r.reported_at END,
           delivery_error = CASE WHEN r.status = 'undelivered' THEN r.error END,
           updated_at = now()
      FROM r
     WHERE m.id = r.message_id AND m.sent_at IS NOT NULL
       AND m.provider_message_id IS NOT DISTINCT FROM r.provider_message_id
       AND m.delivery_status IS DISTINCT FROM 'delivered' AND m.delivery_status IS DISTINCT FROM 'undelivered'
       AND (r.status IN ('delivered', 'undelivered')
            OR (m.delivery_status IS DISTINCT FROM r.status
                AND (m.delivery_reported_at IS NULL OR m.delivery_reported_at <= r.reported_at)))
       AND NOT EXISTS (SELECT 1 FROM ambiguous a WHERE a.seq = r.seq)
    RETURNING r.seq, r.message_id, m.delivery_status, m.delivered_at, m.delivery_error, m.provider_message_id
), outcome AS (
    -- Each pending receipt once: applied, else (its message sent under its id) ambiguous or ignored,
    -- else still pending. A sort, not a join of the CTEs:
    -- those have no statistics, and the planner joined them in a nested loop, 0.37 s of 0.39 s per 1,000.
    SELECT DISTINCT ON (seq) *
      FROM (SELECT seq, 1 AS precedence, 'applied' AS outcome, message_id, delivery_status, delivered_at,
                   delivery_error, provider_message_id
              FROM applied
            UNION ALL
            SELECT seq, 2, 'ambiguous', NULL::uuid, NULL, NULL::timestamptz, NULL, NULL FROM ambiguous
            UNION ALL
            SELECT seq, 3, 'ignored', message_id, NULL, NULL::timestamptz, NULL, NULL FROM matched
            UNION ALL
            SELECT seq, 4, 'pending', NULL::uuid, NULL, NULL::timestamptz, NULL, NULL FROM r) AS o
     ORDER BY seq, precedence
), settled AS (
    UPDATE receipts rc
       SET outcome = o.outcome, message_id = o.message_id, settled_at = now()
      FROM outcome o
     WHERE rc.seq = o.seq AND o.outcome <> 'pending'
    RETURNING rc.seq, rc.outcome, o.delivery_status, o.delivered_at, o.delivery_error, o.provider_message_id
)
SELECT seq, outcome, delivery_status, delivered_at, delivery_error, provider_message_id FROM settled
UNION ALL
SELECT seq, outcome, NULL, NULL, NULL, NULL FROM outcome WHERE outcome = 'pending'
