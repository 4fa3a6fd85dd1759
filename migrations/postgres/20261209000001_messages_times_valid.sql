-- 20261208000001 mended the pending and sending rows only and left its check NOT VALID, but Postgres checks
-- it on every later UPDATE of any row: a delivery receipt's settle of a message sent with a send time in
-- year 0 (stored before 0.7.10) failed, and with it every receipt settled beside it, on every sweep. Every
-- row now says its times as the service reads them (as 20261208000001 does; a send time before the range
-- is the range's first day, so that it counts in no day's cap), and the check is validated: one scan of
-- the table, under a lock that lets reads and writes go on.
UPDATE messages
   SET expires_at = CASE WHEN expires_at >= '10000-01-01' THEN NULL
                         WHEN expires_at <= '0001-01-01' THEN now() ELSE expires_at END,
       send_at = CASE WHEN send_at >= '10000-01-01' OR send_at <= '0001-01-01' THEN NULL ELSE send_at END,
       next_attempt_at = CASE WHEN next_attempt_at >= '10000-01-01' THEN '9999-01-01'
                              WHEN next_attempt_at <= '0001-01-01' THEN now() ELSE next_attempt_at END,
       created_at = CASE WHEN created_at >= '10000-01-01' OR created_at <= '0001-01-01' THEN now()
                         ELSE created_at END,
       sent_at = CASE WHEN sent_at >= '10000-01-01' THEN now()
                      WHEN sent_at <= '0001-01-01' THEN '0001-01-02' ELSE sent_at END,
       updated_at = now()
 WHERE NOT (    next_attempt_at > '0001-01-01' AND next_attempt_at < '10000-01-01'
            AND created_at > '0001-01-01' AND created_at < '10000-01-01'
            AND updated_at > '0001-01-01' AND updated_at < '10000-01-01'
            AND coalesce(send_at > '0001-01-01' AND send_at < '10000-01-01', true)
            AND coalesce(expires_at > '0001-01-01' AND expires_at < '10000-01-01', true)
            AND coalesce(sent_at > '0001-01-01' AND sent_at < '10000-01-01', true));

ALTER TABLE messages VALIDATE CONSTRAINT messages_times_in_range;
