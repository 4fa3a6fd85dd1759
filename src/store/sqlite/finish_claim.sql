-- One result of a flush: message ?1 moves to status ?3 under the fence `NextState` names (an acceptance
-- whoever holds the row, unless it is final; anything else only under the claim's token, ?2). ?4 is the
-- provider's message id and ?5 the send time (µs) of an acceptance, ?6 the delay (µs) before it is due
-- again, ?7 the error, ?8 now (µs), ?9 whether the claim's attempt is taken back (a message put back).
-- The same transition as postgres/finish_claims.sql, one row at a time: SQLite has no unnest, and its
-- statements cost microseconds.
UPDATE messages
   SET status = ?3,
       attempts = attempts - ?9,
       provider_message_id = CASE WHEN ?3 = 'sent' THEN ?4 ELSE provider_message_id END,
       sent_at = ?5,
       next_attempt_at = CASE WHEN ?6 IS NOT NULL THEN ?8 + ?6 ELSE next_attempt_at END,
       last_error = CASE WHEN ?9 AND ?7 IS NULL THEN last_error ELSE ?7 END,
       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?8
 WHERE id = ?1
   AND CASE WHEN ?3 = 'sent' THEN status IN ('pending', 'sending')
            ELSE status = 'sending' AND lease_token = ?2 END
