-- The claim: up to $1 due `pending` rows to `sending`, for owner $2 during $3 seconds, as many as the
-- cluster's pace allows; $4 is RATE_LIMIT per second (NULL: none). One statement, one round trip.
--
-- Order: high before normal before low, oldest first within one (`priority`, 0 high); a row due for
-- longer than $7 seconds (PRIORITY_AGING) counts one level higher, so a flood of high cannot starve normal,
-- and a low one waits behind high ones only. One level, not two: an aged low campaign must never hold up
-- the high messages (codes) that come after it. The due index is (priority, next_attempt_at, seq): the claim reads one lane per priority, each an
-- index scan of at most $1 rows, and merges them. Within a lane the aged rows are its oldest, at its front,
-- so the merge of each lane's first $1 rows is the first $1 overall (short of the rows it ends: see
-- `lane_ends`). Scheduled rows (`send_at`) are
-- simply not due yet: their `next_attempt_at` is their `send_at`, past the end of every scan.
--
-- $5 and $6 are arrays indexed by priority + 1: the `next_attempt_at` and `seq` of the last row this
-- instance claimed in that lane (NULL: none). Each lane's scan starts after its place instead of at its
-- oldest end: the entries of rows that left `pending` stay in the index while a long transaction pins the
-- horizon, and a claim from the oldest end would read them all, every time. Rows that come due behind a
-- frontier (given back, rescued, committed late) are found by a claim without $5, which the fetcher makes
-- every few seconds. A fresh lease token per row. SKIP LOCKED: two instances claiming at once each take
-- different rows instead of waiting. The claim commits on its own: nothing holds a lock while the
-- provider is called.
--
-- A row of a paused campaign (`paused_campaigns`) is skipped, not claimed: the scan goes on past it, so it
-- never blocks the others, and it is due again in its place once the campaign resumes.
--
-- Ending unsent: a due row past its `expires_at` becomes `expired`, and one to a number in `opt_outs`
-- `suppressed` (both final, with the reason) instead of `sending`, whatever the pace: it is never handed
-- out, and it takes no share of the rows granted.
--
-- The pace (migrations/postgres/*_send_rate.sql): nothing while a 429's pause runs. With a rate in force
-- (RATE_LIMIT, or a 429's cut growing back by a tenth of itself a second for 30 s) the send_rate row is
-- locked and moved on by what this claim may take: GCRA with a burst of 50 ms' worth (at least one), so
-- that any one-second window holds at most the rate and 5%, whichever replica claims. Without a rate the
-- row is only read. It answers one row even when nothing is claimed: the pace (the rate in force, how
-- long the pause still runs, and, when the rate allowed fewer than $1 and all of them were claimed, how
-- long until the next message fits: fewer claimed than allowed is a drained queue, not one to claim again
-- as soon as the rate allows), then each claimed or ended row's columns and new status, NULL when there
-- are none.
-- (load/bench.py runs this file and finish_claims.sql through pgbench for the database's ceiling, and
-- load/sent_list.py checks its plan.)
WITH control AS (
    SELECT s.throttled_until, s.cut_rate, s.cut_at
      FROM (VALUES (1)) AS one (id) LEFT JOIN send_rate s ON s.id = one.id
), pace AS (
    SELECT CASE WHEN c.cut_rate IS NULL OR c.cut_at < now() - interval '30 seconds' THEN $4::float8
                ELSE least($4::float8, c.cut_rate * (1 + 0.1 * extract(epoch FROM now() - c.cut_at)::float8))
           END AS rate,
           greatest(0, extract(epoch FROM c.throttled_until - now()))::float8 AS paused_for
      FROM control c
), budget AS (
    UPDATE send_rate s
       SET granted = greatest(0, least($1, floor(greatest(1, 0.05 * p.rate)
                         - greatest(0, extract(epoch FROM s.next_free_at - now())::float8) * p.rate)))::int,
           next_free_at = greatest(s.next_free_at, now()) + make_interval(secs =>
                          greatest(0, least($1, floor(greatest(1, 0.05 * p.rate)
                          - greatest(0, extract(epoch FROM s.next_free_at - now())::float8) * p.rate))) / p.rate)
      FROM pace p
     WHERE s.id = 1 AND p.rate IS NOT NULL AND coalesce(p.paused_for, 0) = 0
 RETURNING s.granted,
           greatest(0, extract(epoch FROM s.next_free_at - now())::float8
                       - (greatest(1, 0.05 * p.rate) - 1) / p.rate) AS next_in
), allowed AS (
    SELECT p.rate, p.paused_for, b.next_in,
           CASE WHEN coalesce(p.paused_for, 0) > 0 THEN 0
                WHEN p.rate IS NULL THEN $1
                ELSE coalesce(b.granted, 0) END AS n
      FROM pace p LEFT JOIN budget b ON true
), due AS (
    -- LIMIT $1, a parameter, so that the planner sees a handful of rows per lane and joins them by key
    -- below; what the pace grants (at most $1) is taken from these in the claim's order.
    SELECT lane.priority AS lane, d.id, d.seq, d.next_attempt_at, d.ends_as,
           CASE WHEN d.next_attempt_at <= now() - make_interval(secs => $7) THEN greatest(lane.priority - 1, 0)
                ELSE lane.priority END AS rank
      FROM (VALUES (0), (1), (2)) AS lane (priority)
     CROSS JOIN LATERAL (
           SELECT m.id, m.seq, m.next_attempt_at,
                  CASE WHEN m.expires_at <= now() THEN 'expired'
                       WHEN EXISTS (SELECT 1 FROM opt_outs o WHERE o.phone_number = m.phone_number) THEN 'suppressed'
                  END AS ends_as
             FROM messages m
            WHERE m.status = 'pending' AND m.priority = lane.priority AND m.next_attempt_at <= now()
              AND NOT EXISTS (SELECT 1 FROM paused_campaigns p WHERE p.campaign = m.campaign)
              AND (m.next_attempt_at, m.seq) > (coalesce(($5::timestamptz[])[lane.priority + 1], '-infinity'),
                                                coalesce(($6::int8[])[lane.priority + 1], 0))
            ORDER BY m.next_attempt_at, m.seq
            LIMIT $1
              FOR UPDATE SKIP LOCKED
           ) AS d
), lane_ends AS (
    -- The last row read of each lane that read $1: rows behind it were not read, and come after it in
    -- the claim's order. A row of another lane after it is not claimed this time, lest it pass one of
    -- them: that happens only when rows the claim ends (expired, suppressed) filled part of the lane,
    -- and the fetcher claims again at once (they are not what it asked for).
    SELECT DISTINCT ON (lane) rank, next_attempt_at, seq
      FROM due
     WHERE lane IN (SELECT lane FROM due GROUP BY lane HAVING count(*) >= $1)
     ORDER BY lane, next_attempt_at DESC, seq DESC
), claimed AS (
    UPDATE messages m
       SET status = 'sending', attempts = m.attempts + 1,
           lease_owner = $2, lease_token = gen_random_uuid(),
           lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
      FROM (SELECT id, rank FROM due d
             WHERE ends_as IS NULL
               AND NOT EXISTS (SELECT 1 FROM lane_ends e
                                WHERE (d.rank, d.next_attempt_at, d.seq) > (e.rank, e.next_attempt_at, e.seq))
             ORDER BY rank, next_attempt_at, seq
             LIMIT (SELECT n FROM allowed)) AS granted
     WHERE m.id = granted.id
 RETURNING m.id, m.lease_token, m.attempts, m.phone_number, m.content, m.seq, m.next_attempt_at, m.priority,
           granted.rank, m.status, m.timezone, m.expires_at
), ended AS (
    UPDATE messages m
       SET status = due.ends_as, updated_at = now(),
           last_error = CASE due.ends_as WHEN 'expired' THEN 'expired: not handed to the provider by its expires_at'
                                         ELSE 'suppressed: the number opted out' END
      FROM due
     WHERE m.id = due.id AND due.ends_as IS NOT NULL
 RETURNING m.id, NULL::uuid, m.attempts, m.phone_number, m.content, m.seq, m.next_attempt_at, m.priority,
           due.rank, m.status, m.timezone, m.expires_at
)
SELECT a.rate, a.paused_for,
       CASE WHEN a.n < $1 AND (SELECT count(*) FROM claimed) >= a.n THEN a.next_in END AS next_in,
       c.id, c.lease_token, c.attempts, c.phone_number, c.content, c.seq, c.next_attempt_at, c.priority, c.rank,
       c.status, c.timezone, c.expires_at
  FROM allowed a LEFT JOIN (SELECT * FROM claimed UNION ALL SELECT * FROM ended) AS c ON true
