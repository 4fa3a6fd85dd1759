-- The status events outbox and the receipts churn like the queue (see *_queue_autovacuum.sql): every
-- event is inserted, leased, then settled, and every receipt inserted then settled, two of each a
-- message while receipts and status webhooks are on. The dispatcher's claim walks the oldest end of the
-- pending events' index, and the applier that of the pending receipts: vacuum them after 1% dead instead
-- of a fifth, or each claim reads past every settled entry since the last vacuum.
--
-- The lease of an event changes no indexed column, so it can be a HOT update (no new index entries,
-- the old version pruned in place) when its page has room for the new version: half of each page is
-- left free for it.
ALTER TABLE status_events SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE receipts SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);
