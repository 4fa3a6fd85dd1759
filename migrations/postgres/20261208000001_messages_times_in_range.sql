-- A time another system writes by plain SQL must be one the service can read: 'infinity' (a natural way
-- to say "never expires") or a year past chrono's range made the claim's decoding panic, killing the
-- fetcher on every replica that claimed the row. Refused at the INSERT or UPDATE instead, with this
-- constraint's name. NOT VALID: rows already stored are not scanned (the table may be large); new writes
-- are checked, and so is any later UPDATE of an old row, the claim's included. So the pending rows that
-- already say "never expires" that way first say it as the service does, with no expiry (the pending
-- index bounds that scan to the backlog).
UPDATE messages SET expires_at = NULL
 WHERE status = 'pending' AND (expires_at <= '0001-01-01' OR expires_at >= '10000-01-01');

ALTER TABLE messages ADD CONSTRAINT messages_times_in_range CHECK (
        next_attempt_at > '0001-01-01' AND next_attempt_at < '10000-01-01'
    AND created_at > '0001-01-01' AND created_at < '10000-01-01'
    AND updated_at > '0001-01-01' AND updated_at < '10000-01-01'
    AND send_at > '0001-01-01' AND send_at < '10000-01-01'
    AND expires_at > '0001-01-01' AND expires_at < '10000-01-01'
    AND sent_at > '0001-01-01' AND sent_at < '10000-01-01'
) NOT VALID;
