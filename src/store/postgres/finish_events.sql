-- Records a round of status event deliveries in one statement: event $1[i] (its seq), held at attempt
-- $5[i], to status $2[i], due again $3[i] seconds from now when given (a retry), with error $4[i]; its
-- lease ends. An event no longer pending at that attempt (its lease ran out and another claim took it)
-- is left to its new holder. An event that failed takes the pending events
-- written after it for its message with it: they could not go without it going first. Not one the
-- receiver acknowledged before (a replay, `delivered_at` kept): it had it, and they may go.
WITH finished AS (
    UPDATE status_events e
       SET status = d.status, lease_expires_at = NULL, last_error = d.error,
           next_attempt_at = CASE WHEN d.retry_in IS NOT NULL THEN now() + make_interval(secs => d.retry_in)
                                  ELSE e.next_attempt_at END,
           delivered_at = CASE WHEN d.status = 'delivered' THEN now() ELSE e.delivered_at END
      FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[], $5::int4[])
           AS d(seq, status, retry_in, error, attempt)
     WHERE e.seq = d.seq AND e.status = 'pending' AND e.attempts = d.attempt
    RETURNING e.seq, e.id, e.message_id, e.status, e.delivered_at
)
UPDATE status_events l
   SET status = 'failed', lease_expires_at = NULL,
       last_error = 'not sent: event ' || f.id || ' of this message, before it, failed'
  FROM finished f
 WHERE f.status = 'failed' AND f.delivered_at IS NULL AND l.message_id = f.message_id AND l.seq > f.seq AND l.status = 'pending'
