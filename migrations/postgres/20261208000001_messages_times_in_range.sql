-- A time another system writes by plain SQL must be one the service can read: 'infinity' (a natural way
-- to say "never expires") or a year past chrono's range made the claim's decoding panic, killing the
-- fetcher on every replica that claimed the row. Refused at the INSERT or UPDATE instead, with this
-- constraint's name. NOT VALID: rows already stored are not scanned (the table may be large); new writes
-- are checked, and so is any later UPDATE of an old row: the claim's, the rescue's. So the rows still to
-- be claimed or rescued (pending, sending) first say their times as the service does: an expiry past the
-- range is none, one before it is now (already expired); a send time out of range is none; a due time
-- past the range is the year 9999 (never, as it said), one before it now.
UPDATE messages
   SET expires_at = CASE WHEN expires_at >= '10000-01-01' THEN NULL
                         WHEN expires_at <= '0001-01-01' THEN now() ELSE expires_at END,
       send_at = CASE WHEN send_at >= '10000-01-01' OR send_at <= '0001-01-01' THEN NULL ELSE send_at END,
       next_attempt_at = CASE WHEN next_attempt_at >= '10000-01-01' THEN '9999-01-01'
                              WHEN next_attempt_at <= '0001-01-01' THEN now() ELSE next_attempt_at END,
       created_at = CASE WHEN created_at >= '10000-01-01' OR created_at <= '0001-01-01' THEN now()
                         ELSE created_at END,
       updated_at = now()
 WHERE status IN ('pending', 'sending')
   AND NOT (    next_attempt_at > '0001-01-01' AND next_attempt_at < '10000-01-01'
            AND created_at > '0001-01-01' AND created_at < '10000-01-01'
            AND coalesce(send_at > '0001-01-01' AND send_at < '10000-01-01', true)
            AND coalesce(expires_at > '0001-01-01' AND expires_at < '10000-01-01', true));

ALTER TABLE messages ADD CONSTRAINT messages_times_in_range CHECK (
        next_attempt_at > '0001-01-01' AND next_attempt_at < '10000-01-01'
    AND created_at > '0001-01-01' AND created_at < '10000-01-01'
    AND updated_at > '0001-01-01' AND updated_at < '10000-01-01'
    AND send_at > '0001-01-01' AND send_at < '10000-01-01'
    AND expires_at > '0001-01-01' AND expires_at < '10000-01-01'
    AND sent_at > '0001-01-01' AND sent_at < '10000-01-01'
) NOT VALID;
