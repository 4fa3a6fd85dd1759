-- A flush of results in one statement: the history rows, then each message's fenced transition (see
-- `NextState`). One array per column: $1 to $7 the messages' next states (id, the claim's token, status,
-- provider_message_id, sent_at, the delay in seconds before it is due again, error) and $17 whether the
-- claim's attempt is taken back (a message put back: its place kept when it has no delay, its last error
-- kept when it brings none); $8 to $16 the attempts for the history (claim_token to provider_message_id, as
-- in the INSERT). A message appears once: a flush that
-- holds one twice is cut into statements that don't. Results whose message is gone (deleted by hand,
-- or pruned) leave no history rather than failing the whole flush on the foreign key.
WITH history AS (
    INSERT INTO message_attempts
           (claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
            provider_message_id)
    SELECT a.* FROM unnest($8::uuid[], $9::uuid[], $10::int4[], $11::timestamptz[], $12::int8[], $13::int4[],
                           $14::text[], $15::text[], $16::text[])
                 AS a(claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
                      provider_message_id)
     WHERE EXISTS (SELECT 1 FROM messages WHERE id = a.message_id)
    ON CONFLICT (claim_token) DO NOTHING
)
UPDATE messages m
   SET status = r.status,
       attempts = m.attempts - r.uncounted::int,
       provider_message_id = CASE WHEN r.status = 'sent' THEN r.provider_message_id ELSE m.provider_message_id END,
       sent_at = r.sent_at,
       next_attempt_at = CASE WHEN r.retry_in IS NOT NULL THEN now() + make_interval(secs => r.retry_in)
                              ELSE m.next_attempt_at END,
       last_error = CASE WHEN r.uncounted AND r.error IS NULL THEN m.last_error ELSE r.error END,
       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::float8[], $7::text[],
              $17::bool[])
       AS r(id, token, status, provider_message_id, sent_at, retry_in, error, uncounted)
 WHERE m.id = r.id
   AND CASE WHEN r.status = 'sent' THEN m.status IN ('pending', 'sending')
            ELSE m.status = 'sending' AND m.lease_token = r.token END
RETURNING m.id
