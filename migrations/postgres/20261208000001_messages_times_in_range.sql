-- A time another system writes by plain SQL must be one the service can read: 'infinity' (a natural way
-- to say "never expires") or a year past chrono's range made the claim's decoding panic, killing the
-- fetcher on every replica that claimed the row. Refused at the INSERT instead, with this constraint's
-- name. NOT VALID: rows already stored are not scanned (the table may be large); new writes are checked.
ALTER TABLE messages ADD CONSTRAINT messages_times_in_range CHECK (
        next_attempt_at > '0001-01-01' AND next_attempt_at < '10000-01-01'
    AND created_at > '0001-01-01' AND created_at < '10000-01-01'
    AND updated_at > '0001-01-01' AND updated_at < '10000-01-01'
    AND send_at > '0001-01-01' AND send_at < '10000-01-01'
    AND expires_at > '0001-01-01' AND expires_at < '10000-01-01'
    AND sent_at > '0001-01-01' AND sent_at < '10000-01-01'
) NOT VALID;
