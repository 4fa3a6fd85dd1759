-- A queue table churns: every message is inserted, updated at least twice (claimed, then finished) and,
-- with SENT_RETENTION, deleted. No update can be HOT (each changes `status`, which every partial index
-- filters on), so each leaves a dead row version and dead entries in the small, hot indexes that every
-- claim walks (`messages_pending_due_idx`, `messages_sending_lease_idx`).
-- Postgres's defaults wait until a fifth of the table is dead: on a table of a million sent rows, 200,000
-- dead versions. Vacuum and analyze after 1% instead, without the cost-based pauses that let a vacuum
-- fall behind a busy queue. Only Postgres has these settings; SQLite needs no counterpart.
ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);

-- The history only grows (and shrinks with SENT_RETENTION); vacuuming it early keeps its visibility map
-- current, so that index-only reads of a message's attempts stay cheap.
ALTER TABLE message_attempts SET (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
