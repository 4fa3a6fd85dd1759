-- A 429 from the provider: pause every replica's claims and cut the cluster's rate. $1 is the answer's
-- Retry-After in seconds (NULL when it gave none: then the pause is 1 s, doubled when 429s come back
-- within a pause's length of the last one ending, at most 30 s); $2 is RATE_LIMIT per second (NULL: none);
-- $3 the answers the replica telling it had over the last second.
-- One burst of 429s (the answers to what was in flight) pauses and cuts once: during a pause, a 429 only
-- stretches it to its own Retry-After, and within a second of a cut the rate is not cut again. The cut
-- halves the rate in force (as claim_due.sql computes it) or, with none, what the provider accepted over
-- the last second: the messages recorded sent in it, or the replica's own answers when more (right after a
-- burst, the flushes that record them have not committed: the cut started from nothing, 1 a second).
-- Answers how long the pause runs from now.
WITH pace AS (
    SELECT CASE WHEN s.cut_rate IS NULL OR s.cut_at < now() - interval '30 seconds' THEN $2::float8
                ELSE least($2::float8, s.cut_rate * (1 + 0.1 * extract(epoch FROM now() - s.cut_at)::float8))
           END AS rate
      FROM send_rate s WHERE s.id = 1
), accepted AS (
    SELECT greatest(count(*), $3::int8)::float8 AS per_second
      FROM messages WHERE status = 'sent' AND sent_at > now() - interval '1 second'
), pause AS (
    SELECT CASE WHEN s.throttled_until > now() THEN greatest(s.pause_seconds, coalesce($1::float8, 0))
                WHEN $1::float8 IS NOT NULL THEN $1::float8
                WHEN s.throttled_until > now() - make_interval(secs => s.pause_seconds)
                     THEN least(30, greatest(1, s.pause_seconds * 2))
                ELSE 1 END AS seconds
      FROM send_rate s WHERE s.id = 1
)
UPDATE send_rate s
   SET pause_seconds = pause.seconds,
       throttled_until = CASE WHEN s.throttled_until > now()
                              THEN greatest(s.throttled_until, now() + make_interval(secs => coalesce($1::float8, 0)))
                              ELSE now() + make_interval(secs => pause.seconds) END,
       cut_rate = CASE WHEN s.cut_at > now() - interval '1 second' THEN s.cut_rate
                       ELSE greatest(1, coalesce(pace.rate, accepted.per_second) / 2) END,
       cut_at = CASE WHEN s.cut_at > now() - interval '1 second' THEN s.cut_at ELSE now() END
  FROM pace, accepted, pause
 WHERE s.id = 1
RETURNING extract(epoch FROM s.throttled_until - now())::float8
