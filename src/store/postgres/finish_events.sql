-- Records a round of status event deliveries in one statement: event $1[i] (its seq) to status $2[i],
-- due again $3[i] seconds from now when given (a retry), with error $4[i]; its lease ends.
UPDATE status_events e
   SET status = d.status, lease_expires_at = NULL, last_error = d.error,
       next_attempt_at = CASE WHEN d.retry_in IS NOT NULL THEN now() + make_interval(secs => d.retry_in)
                              ELSE e.next_attempt_at END,
       delivered_at = CASE WHEN d.status = 'delivered' THEN now() END
  FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[]) AS d(seq, status, retry_in, error)
 WHERE e.seq = d.seq
