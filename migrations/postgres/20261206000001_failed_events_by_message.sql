-- A message's events go in order: an event written after another of its message failed is written
-- failed too (it could not go without that one going first). The write looks for such an event by
-- message; failed events are few, but a receiver down for days makes many, so they get an index of
-- their own rather than a scan of every failed event per event written.
-- Built on every row of the table: no statement timeout of the service's connections for it (the
-- migration's own transaction). Writes to the table wait for it.
SET LOCAL statement_timeout = 0;
CREATE INDEX status_events_failed_message_idx ON status_events (message_id, seq) WHERE status = 'failed';
