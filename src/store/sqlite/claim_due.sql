-- Due `pending` rows to `sending`, up to ?1 (what sqlite/draw_pace.sql granted, in the same transaction),
-- for owner ?2, at ?3 (now, µs) for ?4 µs; a fresh lease token per row (a random UUIDv4, as Postgres
-- makes). SQLite has one writer at a time, so the statement is atomic without row locks: two processes on
-- one file never claim the same row. The order is postgres/claim_due.sql's: one lane per priority (high,
-- normal, low), each resuming after its own place (?5 and ?6, ?7 and ?8, ?9 and ?10: the `next_attempt_at`
-- and `seq` of the lane's frontier; without one, the oldest possible), merged high first, a row due for
-- longer than ?11 µs (PRIORITY_AGING) one level up, oldest first within one; rows of a paused campaign
-- are skipped. A due row past its
-- `expires_at` becomes `expired`, one to a number in `opt_outs` `suppressed`, instead of `sending`: of up to
-- ?12 rows (the request's limit) read in that order, whatever the pace, as Postgres does, and only the first ?1
-- of the others are claimed (`place`), so rows that will never be sent take no share of the rate. The pace
-- columns are Postgres's answer's shape; here draw_pace.sql answered them.
UPDATE messages
   SET status = picked.next_status,
       attempts = attempts + (picked.next_status = 'sending'),
       last_error = CASE picked.next_status
                         WHEN 'expired' THEN 'expired: not handed to the provider by its expires_at'
                         WHEN 'suppressed' THEN 'suppressed: the number opted out'
                         ELSE last_error END,
       lease_owner = CASE WHEN picked.next_status = 'sending' THEN ?2 END,
       lease_expires_at = CASE WHEN picked.next_status = 'sending' THEN ?3 + ?4 END,
       updated_at = ?3,
       lease_token = CASE WHEN picked.next_status = 'sending' THEN
                     lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
                           substr(hex(randomblob(2)), 2) || '-' ||
                           substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) ||
                           '-' || hex(randomblob(6))) END
  FROM (SELECT seq, next_status FROM (
        SELECT seq, next_status,
               row_number() OVER (PARTITION BY next_status = 'sending'
                                  ORDER BY CASE WHEN next_attempt_at <= ?3 - ?11 THEN max(priority - 1, 0)
                                                ELSE priority END, next_attempt_at, seq) AS place
          FROM (
        SELECT m.seq, m.priority, m.next_attempt_at,
               CASE WHEN m.expires_at <= ?3 THEN 'expired'
                    WHEN EXISTS (SELECT 1 FROM opt_outs o WHERE o.phone_number = m.phone_number) THEN 'suppressed'
                    ELSE 'sending' END AS next_status
          FROM messages m
         WHERE m.seq IN (
               SELECT seq FROM (
                      SELECT * FROM (SELECT seq, next_attempt_at, priority FROM messages
                                      WHERE status = 'pending' AND priority = 0 AND next_attempt_at <= ?3
                                        AND NOT EXISTS (SELECT 1 FROM paused_campaigns p
                                                         WHERE p.campaign = messages.campaign)
                                        AND (next_attempt_at, seq) > (?5, ?6)
                                      ORDER BY next_attempt_at, seq LIMIT ?12)
                      UNION ALL
                      SELECT * FROM (SELECT seq, next_attempt_at, priority FROM messages
                                      WHERE status = 'pending' AND priority = 1 AND next_attempt_at <= ?3
                                        AND NOT EXISTS (SELECT 1 FROM paused_campaigns p
                                                         WHERE p.campaign = messages.campaign)
                                        AND (next_attempt_at, seq) > (?7, ?8)
                                      ORDER BY next_attempt_at, seq LIMIT ?12)
                      UNION ALL
                      SELECT * FROM (SELECT seq, next_attempt_at, priority FROM messages
                                      WHERE status = 'pending' AND priority = 2 AND next_attempt_at <= ?3
                                        AND NOT EXISTS (SELECT 1 FROM paused_campaigns p
                                                         WHERE p.campaign = messages.campaign)
                                        AND (next_attempt_at, seq) > (?9, ?10)
                                      ORDER BY next_attempt_at, seq LIMIT ?12))
                ORDER BY CASE WHEN next_attempt_at <= ?3 - ?11 THEN max(priority - 1, 0) ELSE priority END,
                         next_attempt_at, seq
                LIMIT ?12)))
         WHERE next_status <> 'sending' OR place <= ?1) AS picked
 WHERE messages.seq = picked.seq
RETURNING NULL AS rate, NULL AS paused_for, NULL AS next_in, id, lease_token, attempts, phone_number, content, seq,
          next_attempt_at, priority,
          CASE WHEN next_attempt_at <= ?3 - ?11 THEN max(priority - 1, 0) ELSE priority END AS rank, status,
          timezone, expires_at
