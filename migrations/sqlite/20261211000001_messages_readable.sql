-- 0.7.14 refused at the INSERT the values the service cannot read, and failed the pending rows that held
-- one, but left the values in place: the failed list, and `GET /messages/{id}` of such a row, answered
-- 500 (sqlx reads a column by the type of the value stored), and a retry put the row back to pending as
-- it was, to fail every claim again. The columns it did not check (`sent_at`, `created_at`,
-- `updated_at`, the lease's and the delivery's times, the texts beside the number and the content,
-- `attempts` by an UPDATE) broke the same way. Every row is now mended to values the service reads: a
-- time given as a REAL is rounded, one given as text is read as SQLite reads a date (else now, or none
-- where none may be), a number that is no whole one is rounded (a priority into 0 to 2, attempts into
-- 0 to 1,000,000: an INSERT may give no more, and each claim adds one, up to Postgres's 2147483647),
-- text given as bytes becomes their hex digits (bytes cast to text may be no UTF-8, which the service
-- cannot read either) and a number becomes its digits, and an id that is no UUID gets a new one, its
-- old one kept in `last_error`. Then two triggers check the same columns, of every INSERT and of every
-- UPDATE (attempts to 1,000,000 and to 2147483647): a row an INSERT let through that an UPDATE refuses
-- would fail every claim it is in.
UPDATE messages
   SET next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL
        WHEN typeof(next_attempt_at) = 'integer' AND next_attempt_at > -62135596800000000 AND next_attempt_at < 253402300800000000 THEN next_attempt_at
        WHEN typeof(next_attempt_at) = 'real' AND next_attempt_at > -62135596800000000 AND next_attempt_at < 253402300800000000 THEN CAST(round(next_attempt_at) AS INTEGER)
        WHEN typeof(next_attempt_at) = 'text' AND (julianday(next_attempt_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(next_attempt_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(next_attempt_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END,
       created_at = CASE WHEN created_at IS NULL THEN NULL
        WHEN typeof(created_at) = 'integer' AND created_at > -62135596800000000 AND created_at < 253402300800000000 THEN created_at
        WHEN typeof(created_at) = 'real' AND created_at > -62135596800000000 AND created_at < 253402300800000000 THEN CAST(round(created_at) AS INTEGER)
        WHEN typeof(created_at) = 'text' AND (julianday(created_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(created_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(created_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END,
       updated_at = CASE WHEN updated_at IS NULL THEN NULL
        WHEN typeof(updated_at) = 'integer' AND updated_at > -62135596800000000 AND updated_at < 253402300800000000 THEN updated_at
        WHEN typeof(updated_at) = 'real' AND updated_at > -62135596800000000 AND updated_at < 253402300800000000 THEN CAST(round(updated_at) AS INTEGER)
        WHEN typeof(updated_at) = 'text' AND (julianday(updated_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(updated_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(updated_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END,
       send_at = CASE WHEN send_at IS NULL THEN NULL
        WHEN typeof(send_at) = 'integer' AND send_at > -62135596800000000 AND send_at < 253402300800000000 THEN send_at
        WHEN typeof(send_at) = 'real' AND send_at > -62135596800000000 AND send_at < 253402300800000000 THEN CAST(round(send_at) AS INTEGER)
        WHEN typeof(send_at) = 'text' AND (julianday(send_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(send_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(send_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE NULL END,
       expires_at = CASE WHEN expires_at IS NULL THEN NULL
        WHEN typeof(expires_at) = 'integer' AND expires_at > -62135596800000000 AND expires_at < 253402300800000000 THEN expires_at
        WHEN typeof(expires_at) = 'real' AND expires_at > -62135596800000000 AND expires_at < 253402300800000000 THEN CAST(round(expires_at) AS INTEGER)
        WHEN typeof(expires_at) = 'text' AND (julianday(expires_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(expires_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(expires_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE NULL END,
       sent_at = CASE WHEN sent_at IS NULL THEN NULL
        WHEN typeof(sent_at) = 'integer' AND sent_at > -62135596800000000 AND sent_at < 253402300800000000 THEN sent_at
        WHEN typeof(sent_at) = 'real' AND sent_at > -62135596800000000 AND sent_at < 253402300800000000 THEN CAST(round(sent_at) AS INTEGER)
        WHEN typeof(sent_at) = 'text' AND (julianday(sent_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(sent_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(sent_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CASE WHEN status = 'sent' THEN CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END END,
       lease_expires_at = CASE WHEN lease_expires_at IS NULL THEN NULL
        WHEN typeof(lease_expires_at) = 'integer' AND lease_expires_at > -62135596800000000 AND lease_expires_at < 253402300800000000 THEN lease_expires_at
        WHEN typeof(lease_expires_at) = 'real' AND lease_expires_at > -62135596800000000 AND lease_expires_at < 253402300800000000 THEN CAST(round(lease_expires_at) AS INTEGER)
        WHEN typeof(lease_expires_at) = 'text' AND (julianday(lease_expires_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(lease_expires_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(lease_expires_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CASE WHEN status = 'sending' THEN CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END END,
       delivery_reported_at = CASE WHEN delivery_reported_at IS NULL THEN NULL
        WHEN typeof(delivery_reported_at) = 'integer' AND delivery_reported_at > -62135596800000000 AND delivery_reported_at < 253402300800000000 THEN delivery_reported_at
        WHEN typeof(delivery_reported_at) = 'real' AND delivery_reported_at > -62135596800000000 AND delivery_reported_at < 253402300800000000 THEN CAST(round(delivery_reported_at) AS INTEGER)
        WHEN typeof(delivery_reported_at) = 'text' AND (julianday(delivery_reported_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(delivery_reported_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(delivery_reported_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CASE WHEN delivery_status IS NOT NULL THEN CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END END,
       delivered_at = CASE WHEN delivered_at IS NULL THEN NULL
        WHEN typeof(delivered_at) = 'integer' AND delivered_at > -62135596800000000 AND delivered_at < 253402300800000000 THEN delivered_at
        WHEN typeof(delivered_at) = 'real' AND delivered_at > -62135596800000000 AND delivered_at < 253402300800000000 THEN CAST(round(delivered_at) AS INTEGER)
        WHEN typeof(delivered_at) = 'text' AND (julianday(delivered_at) - 2440587.5) * 86400000000.0 > -62135596800000000 AND (julianday(delivered_at) - 2440587.5) * 86400000000.0 < 253402300800000000 THEN CAST((julianday(delivered_at) - 2440587.5) * 86400000000.0 AS INTEGER)
        ELSE CASE WHEN delivery_status = 'delivered' THEN CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) END END,
       priority = CASE WHEN typeof(priority) = 'integer' THEN priority
        WHEN typeof(priority) IN ('real', 'text') THEN max(0, min(2, CAST(round(CAST(priority AS REAL)) AS INTEGER)))
        ELSE 1 END,
       attempts = CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND 1000000 THEN attempts
        WHEN typeof(attempts) IN ('integer', 'real', 'text') THEN max(0, min(1000000, CAST(round(CAST(attempts AS REAL)) AS INTEGER)))
        ELSE 0 END,
       phone_number = CASE WHEN phone_number IS NULL OR typeof(phone_number) = 'text' THEN phone_number WHEN typeof(phone_number) = 'blob' THEN hex(phone_number) ELSE CAST(phone_number AS TEXT) END,
       content = CASE WHEN content IS NULL OR typeof(content) = 'text' THEN content WHEN typeof(content) = 'blob' THEN hex(content) ELSE CAST(content AS TEXT) END,
       timezone = CASE WHEN timezone IS NULL OR typeof(timezone) = 'text' THEN timezone WHEN typeof(timezone) = 'blob' THEN hex(timezone) ELSE CAST(timezone AS TEXT) END,
       campaign = CASE WHEN campaign IS NULL OR typeof(campaign) = 'text' THEN campaign WHEN typeof(campaign) = 'blob' THEN nullif(substr(hex(campaign), 1, 64), '') ELSE CAST(campaign AS TEXT) END,
       provider_message_id = CASE WHEN provider_message_id IS NULL OR typeof(provider_message_id) = 'text' THEN provider_message_id WHEN typeof(provider_message_id) = 'blob' THEN hex(provider_message_id) ELSE CAST(provider_message_id AS TEXT) END,
       last_error = CASE WHEN last_error IS NULL OR typeof(last_error) = 'text' THEN last_error WHEN typeof(last_error) = 'blob' THEN hex(last_error) ELSE CAST(last_error AS TEXT) END,
       delivery_error = CASE WHEN delivery_error IS NULL OR typeof(delivery_error) = 'text' THEN delivery_error WHEN typeof(delivery_error) = 'blob' THEN hex(delivery_error) ELSE CAST(delivery_error AS TEXT) END,
       lease_owner = CASE WHEN lease_owner IS NULL OR typeof(lease_owner) = 'text' THEN lease_owner WHEN typeof(lease_owner) = 'blob' THEN hex(lease_owner) ELSE CAST(lease_owner AS TEXT) END,
       lease_token = CASE WHEN lease_token IS NULL OR typeof(lease_token) = 'text' THEN lease_token WHEN typeof(lease_token) = 'blob' THEN hex(lease_token) ELSE CAST(lease_token AS TEXT) END
 WHERE NOT (typeof(next_attempt_at) = 'integer' AND next_attempt_at > -62135596800000000 AND next_attempt_at < 253402300800000000)
    OR NOT (typeof(created_at) = 'integer' AND created_at > -62135596800000000 AND created_at < 253402300800000000)
    OR NOT (typeof(updated_at) = 'integer' AND updated_at > -62135596800000000 AND updated_at < 253402300800000000)
    OR NOT (send_at IS NULL OR (typeof(send_at) = 'integer' AND send_at > -62135596800000000 AND send_at < 253402300800000000))
    OR NOT (expires_at IS NULL OR (typeof(expires_at) = 'integer' AND expires_at > -62135596800000000 AND expires_at < 253402300800000000))
    OR NOT (sent_at IS NULL OR (typeof(sent_at) = 'integer' AND sent_at > -62135596800000000 AND sent_at < 253402300800000000))
    OR NOT (lease_expires_at IS NULL OR (typeof(lease_expires_at) = 'integer' AND lease_expires_at > -62135596800000000 AND lease_expires_at < 253402300800000000))
    OR NOT (delivery_reported_at IS NULL OR (typeof(delivery_reported_at) = 'integer' AND delivery_reported_at > -62135596800000000 AND delivery_reported_at < 253402300800000000))
    OR NOT (delivered_at IS NULL OR (typeof(delivered_at) = 'integer' AND delivered_at > -62135596800000000 AND delivered_at < 253402300800000000))
    OR typeof(priority) <> 'integer'
    OR NOT (typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND 1000000)
    OR typeof(phone_number) <> 'text'
    OR typeof(content) <> 'text'
    OR (timezone IS NOT NULL AND typeof(timezone) <> 'text')
    OR (campaign IS NOT NULL AND typeof(campaign) <> 'text')
    OR (provider_message_id IS NOT NULL AND typeof(provider_message_id) <> 'text')
    OR (last_error IS NOT NULL AND typeof(last_error) <> 'text')
    OR (delivery_error IS NOT NULL AND typeof(delivery_error) <> 'text')
    OR (lease_owner IS NOT NULL AND typeof(lease_owner) <> 'text')
    OR (lease_token IS NOT NULL AND typeof(lease_token) <> 'text');

UPDATE messages
   SET id = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' ||
                  substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' ||
                  hex(randomblob(6))),
       last_error = coalesce(last_error || ' ', '') || '(its id was '
                    || CASE WHEN typeof(id) = 'text' THEN quote(substr(id, 1, 64)) ELSE quote(substr(id, 1, 32)) END
                    || ', no UUID: it has a new one)'
 WHERE NOT (typeof(id) = 'text' AND length(id) = 36 AND substr(id, 9, 1) = '-' AND substr(id, 14, 1) = '-' AND substr(id, 19, 1) = '-'
       AND substr(id, 24, 1) = '-' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*')
   AND NOT EXISTS (SELECT 1 FROM message_attempts a WHERE a.message_id = messages.id);

DROP TRIGGER messages_text_is_text;
DROP TRIGGER messages_times_are_microseconds;
DROP TRIGGER messages_counts_are_whole;
DROP TRIGGER messages_changed_text_is_text;
DROP TRIGGER messages_changed_times_are_microseconds;
DROP TRIGGER messages_changed_priority_is_whole;

-- Times are whole microseconds since 1970-01-01T00:00:00Z, within the years 1 to 9999, as on Postgres.
CREATE TRIGGER messages_values_are_readable BEFORE INSERT ON messages
    WHEN NOT (typeof(NEW.next_attempt_at) = 'integer' AND NEW.next_attempt_at > -62135596800000000 AND NEW.next_attempt_at < 253402300800000000)
      OR NOT (typeof(NEW.created_at) = 'integer' AND NEW.created_at > -62135596800000000 AND NEW.created_at < 253402300800000000)
      OR NOT (typeof(NEW.updated_at) = 'integer' AND NEW.updated_at > -62135596800000000 AND NEW.updated_at < 253402300800000000)
      OR NOT (NEW.send_at IS NULL OR (typeof(NEW.send_at) = 'integer' AND NEW.send_at > -62135596800000000 AND NEW.send_at < 253402300800000000))
      OR NOT (NEW.expires_at IS NULL OR (typeof(NEW.expires_at) = 'integer' AND NEW.expires_at > -62135596800000000 AND NEW.expires_at < 253402300800000000))
      OR NOT (NEW.sent_at IS NULL OR (typeof(NEW.sent_at) = 'integer' AND NEW.sent_at > -62135596800000000 AND NEW.sent_at < 253402300800000000))
      OR NOT (NEW.lease_expires_at IS NULL OR (typeof(NEW.lease_expires_at) = 'integer' AND NEW.lease_expires_at > -62135596800000000 AND NEW.lease_expires_at < 253402300800000000))
      OR NOT (NEW.delivery_reported_at IS NULL OR (typeof(NEW.delivery_reported_at) = 'integer' AND NEW.delivery_reported_at > -62135596800000000 AND NEW.delivery_reported_at < 253402300800000000))
      OR NOT (NEW.delivered_at IS NULL OR (typeof(NEW.delivered_at) = 'integer' AND NEW.delivered_at > -62135596800000000 AND NEW.delivered_at < 253402300800000000))
      OR typeof(NEW.priority) <> 'integer'
      OR NOT (typeof(NEW.attempts) = 'integer' AND NEW.attempts BETWEEN 0 AND 1000000)
      OR typeof(NEW.phone_number) <> 'text'
      OR typeof(NEW.content) <> 'text'
      OR (NEW.timezone IS NOT NULL AND typeof(NEW.timezone) <> 'text')
      OR (NEW.campaign IS NOT NULL AND typeof(NEW.campaign) <> 'text')
      OR (NEW.provider_message_id IS NOT NULL AND typeof(NEW.provider_message_id) <> 'text')
      OR (NEW.last_error IS NOT NULL AND typeof(NEW.last_error) <> 'text')
      OR (NEW.delivery_error IS NOT NULL AND typeof(NEW.delivery_error) <> 'text')
      OR (NEW.lease_owner IS NOT NULL AND typeof(NEW.lease_owner) <> 'text')
      OR (NEW.lease_token IS NOT NULL AND typeof(NEW.lease_token) <> 'text')
BEGIN
    SELECT RAISE(ABORT, 'messages: times (next_attempt_at, send_at, expires_at, sent_at, created_at, updated_at, lease_expires_at, delivery_reported_at, delivered_at) must be whole microseconds since 1970-01-01T00:00:00Z within the years 1 to 9999, priority (0 high, 1 normal, 2 low) and attempts whole numbers, and the texts (phone_number, content, timezone, campaign, provider_message_id, last_error, delivery_error, lease_owner, lease_token) text');
END;

-- The same of any change, by hand or by the service (which writes whole numbers and text itself).
CREATE TRIGGER messages_changed_values_are_readable BEFORE UPDATE ON messages
    WHEN NOT (typeof(NEW.next_attempt_at) = 'integer' AND NEW.next_attempt_at > -62135596800000000 AND NEW.next_attempt_at < 253402300800000000)
      OR NOT (typeof(NEW.created_at) = 'integer' AND NEW.created_at > -62135596800000000 AND NEW.created_at < 253402300800000000)
      OR NOT (typeof(NEW.updated_at) = 'integer' AND NEW.updated_at > -62135596800000000 AND NEW.updated_at < 253402300800000000)
      OR NOT (NEW.send_at IS NULL OR (typeof(NEW.send_at) = 'integer' AND NEW.send_at > -62135596800000000 AND NEW.send_at < 253402300800000000))
      OR NOT (NEW.expires_at IS NULL OR (typeof(NEW.expires_at) = 'integer' AND NEW.expires_at > -62135596800000000 AND NEW.expires_at < 253402300800000000))
      OR NOT (NEW.sent_at IS NULL OR (typeof(NEW.sent_at) = 'integer' AND NEW.sent_at > -62135596800000000 AND NEW.sent_at < 253402300800000000))
      OR NOT (NEW.lease_expires_at IS NULL OR (typeof(NEW.lease_expires_at) = 'integer' AND NEW.lease_expires_at > -62135596800000000 AND NEW.lease_expires_at < 253402300800000000))
      OR NOT (NEW.delivery_reported_at IS NULL OR (typeof(NEW.delivery_reported_at) = 'integer' AND NEW.delivery_reported_at > -62135596800000000 AND NEW.delivery_reported_at < 253402300800000000))
      OR NOT (NEW.delivered_at IS NULL OR (typeof(NEW.delivered_at) = 'integer' AND NEW.delivered_at > -62135596800000000 AND NEW.delivered_at < 253402300800000000))
      OR typeof(NEW.priority) <> 'integer'
      OR NOT (typeof(NEW.attempts) = 'integer' AND NEW.attempts BETWEEN 0 AND 2147483647)
      OR typeof(NEW.phone_number) <> 'text'
      OR typeof(NEW.content) <> 'text'
      OR (NEW.timezone IS NOT NULL AND typeof(NEW.timezone) <> 'text')
      OR (NEW.campaign IS NOT NULL AND typeof(NEW.campaign) <> 'text')
      OR (NEW.provider_message_id IS NOT NULL AND typeof(NEW.provider_message_id) <> 'text')
      OR (NEW.last_error IS NOT NULL AND typeof(NEW.last_error) <> 'text')
      OR (NEW.delivery_error IS NOT NULL AND typeof(NEW.delivery_error) <> 'text')
      OR (NEW.lease_owner IS NOT NULL AND typeof(NEW.lease_owner) <> 'text')
      OR (NEW.lease_token IS NOT NULL AND typeof(NEW.lease_token) <> 'text')
BEGIN
    SELECT RAISE(ABORT, 'messages: times (next_attempt_at, send_at, expires_at, sent_at, created_at, updated_at, lease_expires_at, delivery_reported_at, delivered_at) must be whole microseconds since 1970-01-01T00:00:00Z within the years 1 to 9999, priority (0 high, 1 normal, 2 low) and attempts whole numbers, and the texts (phone_number, content, timezone, campaign, provider_message_id, last_error, delivery_error, lease_owner, lease_token) text');
END;
