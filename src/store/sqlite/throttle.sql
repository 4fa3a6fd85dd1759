-- A 429 from the provider (see postgres/throttle.sql, the same in Postgres's terms): ?1 Retry-After in
-- seconds (NULL: none given), ?2 RATE_LIMIT per second (NULL: none), ?3 now (µs), ?4 the answers this
-- instance had over the last second. Answers how long the pause runs from now, in seconds.
WITH pace AS (
    SELECT CASE WHEN cut_rate IS NULL OR cut_at < ?3 - 30000000 THEN ?2
                ELSE min(coalesce(?2, 1e300), cut_rate * (1 + 0.1 * (?3 - cut_at) / 1e6)) END AS rate
      FROM send_rate WHERE id = 1
), accepted AS (
    SELECT max(count(*), ?4) AS per_second FROM messages WHERE status = 'sent' AND sent_at > ?3 - 1000000
), pause AS (
    SELECT CASE WHEN coalesce(throttled_until, 0) > ?3 THEN max(pause_seconds, coalesce(?1, 0))
                WHEN ?1 IS NOT NULL THEN ?1
                WHEN coalesce(throttled_until, 0) > ?3 - pause_seconds * 1e6 THEN min(30, max(1, pause_seconds * 2))
                ELSE 1 END AS seconds
      FROM send_rate WHERE id = 1
)
UPDATE send_rate
   SET pause_seconds = (SELECT seconds FROM pause),
       throttled_until = CASE WHEN coalesce(throttled_until, 0) > ?3
                              THEN max(throttled_until, ?3 + CAST(coalesce(?1, 0) * 1e6 AS INTEGER))
                              ELSE ?3 + CAST((SELECT seconds FROM pause) * 1e6 AS INTEGER) END,
       cut_rate = CASE WHEN coalesce(cut_at, 0) > ?3 - 1000000 THEN cut_rate
                       ELSE max(1, coalesce((SELECT rate FROM pace), (SELECT per_second FROM accepted)) / 2.0) END,
       cut_at = CASE WHEN coalesce(cut_at, 0) > ?3 - 1000000 THEN cut_at ELSE ?3 END
 WHERE id = 1
RETURNING (throttled_until - ?3) / 1e6
