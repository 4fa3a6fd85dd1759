-- The pace of a claim (see postgres/claim_due.sql, which does the same inside its one statement): ?1 rows
-- asked, ?2 RATE_LIMIT per second (NULL: none), ?3 now (µs). Nothing while a 429's pause runs; with a rate
-- in force (RATE_LIMIT, or a 429's cut growing back by a tenth of itself a second for 30 s), GCRA with a
-- burst of 50 ms' worth (at least one) moves next_free_at on by what is granted. Run in the claim's
-- transaction, just before sqlite/claim_due.sql takes `granted` rows. Answers what was granted, the rate
-- in force, the pause left and when the next message fits (seconds).
WITH pace AS (
    SELECT CASE WHEN cut_rate IS NULL OR cut_at < ?3 - 30000000 THEN ?2
                ELSE min(coalesce(?2, 1e300), cut_rate * (1 + 0.1 * (?3 - cut_at) / 1e6)) END AS rate,
           max(0, coalesce(throttled_until, 0) - ?3) AS paused_us
      FROM send_rate WHERE id = 1
), allowance AS (
    SELECT CASE WHEN p.paused_us > 0 THEN 0
                WHEN p.rate IS NULL THEN ?1
                ELSE max(0, min(?1, CAST(max(1, 0.05 * p.rate) - max(0, s.next_free_at - ?3) / 1e6 * p.rate
                                         AS INTEGER))) END AS n
      FROM pace p, send_rate s WHERE s.id = 1
)
UPDATE send_rate
   SET granted = (SELECT n FROM allowance),
       next_free_at = CASE WHEN (SELECT rate FROM pace) IS NULL OR (SELECT paused_us FROM pace) > 0 THEN next_free_at
                           ELSE max(next_free_at, ?3)
                                + CAST((SELECT n FROM allowance) * 1e6 / (SELECT rate FROM pace) AS INTEGER) END
 WHERE id = 1
RETURNING granted,
          (SELECT rate FROM pace) AS rate,
          (SELECT paused_us FROM pace) / 1e6 AS paused_for,
          max(0.0, (next_free_at - ?3) / 1e6 - (max(1, 0.05 * (SELECT rate FROM pace)) - 1) / (SELECT rate FROM pace))
              AS next_in
