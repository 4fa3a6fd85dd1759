-- SQLite stores what a plain INSERT gives whatever the column's type: a time as a REAL (microseconds
-- computed in floating point), as text ('2026-12-24 09:00'), a priority of 1.5, content as a blob. The
-- service reads whole numbers and text, so such a row failed every claim it was in, and every claim
-- took it first: nothing was sent at all, or (a time as text, never `<=` a number) the row was never due
-- and never said why. Postgres refuses these at the INSERT by its column types and
-- `messages_times_in_range`; here these triggers do, naming the columns. Times are whole microseconds
-- since 1970-01-01T00:00:00Z, within the years 1 to 9999 as on Postgres.
--
-- Rows stored so before, still to be sent, are failed, saying why: they could never be sent once.

CREATE TRIGGER messages_text_is_text BEFORE INSERT ON messages
    WHEN typeof(NEW.phone_number) <> 'text' OR typeof(NEW.content) <> 'text'
      OR (NEW.timezone IS NOT NULL AND typeof(NEW.timezone) <> 'text')
      OR (NEW.campaign IS NOT NULL AND typeof(NEW.campaign) <> 'text')
BEGIN
    SELECT RAISE(ABORT, 'messages.phone_number, content, timezone and campaign must be text');
END;

CREATE TRIGGER messages_times_are_microseconds BEFORE INSERT ON messages
    WHEN typeof(NEW.next_attempt_at) <> 'integer'
      OR NOT (NEW.next_attempt_at > -62135596800000000 AND NEW.next_attempt_at < 253402300800000000)
      OR (NEW.send_at IS NOT NULL AND (typeof(NEW.send_at) <> 'integer'
          OR NOT (NEW.send_at > -62135596800000000 AND NEW.send_at < 253402300800000000)))
      OR (NEW.expires_at IS NOT NULL AND (typeof(NEW.expires_at) <> 'integer'
          OR NOT (NEW.expires_at > -62135596800000000 AND NEW.expires_at < 253402300800000000)))
BEGIN
    SELECT RAISE(ABORT, 'messages.next_attempt_at, send_at and expires_at must be whole microseconds since 1970-01-01T00:00:00Z, within the years 1 to 9999');
END;

CREATE TRIGGER messages_counts_are_whole BEFORE INSERT ON messages
    WHEN typeof(NEW.priority) <> 'integer' OR typeof(NEW.attempts) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'messages.priority (0 high, 1 normal, 2 low) and attempts must be whole numbers');
END;

-- The same of a change by hand (the service writes whole numbers and text itself).
CREATE TRIGGER messages_changed_text_is_text BEFORE UPDATE OF phone_number, content, timezone, campaign ON messages
    WHEN typeof(NEW.phone_number) <> 'text' OR typeof(NEW.content) <> 'text'
      OR (NEW.timezone IS NOT NULL AND typeof(NEW.timezone) <> 'text')
      OR (NEW.campaign IS NOT NULL AND typeof(NEW.campaign) <> 'text')
BEGIN
    SELECT RAISE(ABORT, 'messages.phone_number, content, timezone and campaign must be text');
END;

CREATE TRIGGER messages_changed_times_are_microseconds
    BEFORE UPDATE OF next_attempt_at, send_at, expires_at ON messages
    WHEN typeof(NEW.next_attempt_at) <> 'integer'
      OR NOT (NEW.next_attempt_at > -62135596800000000 AND NEW.next_attempt_at < 253402300800000000)
      OR (NEW.send_at IS NOT NULL AND (typeof(NEW.send_at) <> 'integer'
          OR NOT (NEW.send_at > -62135596800000000 AND NEW.send_at < 253402300800000000)))
      OR (NEW.expires_at IS NOT NULL AND (typeof(NEW.expires_at) <> 'integer'
          OR NOT (NEW.expires_at > -62135596800000000 AND NEW.expires_at < 253402300800000000)))
BEGIN
    SELECT RAISE(ABORT, 'messages.next_attempt_at, send_at and expires_at must be whole microseconds since 1970-01-01T00:00:00Z, within the years 1 to 9999');
END;

CREATE TRIGGER messages_changed_priority_is_whole BEFORE UPDATE OF priority ON messages
    WHEN typeof(NEW.priority) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'messages.priority (0 high, 1 normal, 2 low) and attempts must be whole numbers');
END;

UPDATE messages
   SET status = 'failed', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       last_error = 'a column holds a value the service cannot read (a time that is not whole microseconds '
                    || 'within the years 1 to 9999, a priority or attempts that is not whole, or text that is '
                    || 'not text): it could never be sent once',
       updated_at = CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)
 WHERE status IN ('pending', 'sending')
   AND (   typeof(phone_number) <> 'text' OR typeof(content) <> 'text'
        OR (timezone IS NOT NULL AND typeof(timezone) <> 'text')
        OR (campaign IS NOT NULL AND typeof(campaign) <> 'text')
        OR typeof(next_attempt_at) <> 'integer'
        OR NOT (next_attempt_at > -62135596800000000 AND next_attempt_at < 253402300800000000)
        OR (send_at IS NOT NULL AND (typeof(send_at) <> 'integer'
            OR NOT (send_at > -62135596800000000 AND send_at < 253402300800000000)))
        OR (expires_at IS NOT NULL AND (typeof(expires_at) <> 'integer'
            OR NOT (expires_at > -62135596800000000 AND expires_at < 253402300800000000)))
        OR typeof(priority) <> 'integer' OR typeof(attempts) <> 'integer');
