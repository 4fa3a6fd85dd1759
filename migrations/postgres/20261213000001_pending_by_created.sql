-- The pending list, newest first (`GET /messages?status=pending`, the console's pending card every few
-- seconds): without an index of its order, each page read and sorted every pending row, 0.2 s a page
-- with a million queued. Written once per enqueue, at the right-hand edge; a claim leaves it.
-- Built on every row of the table: no statement timeout of the service's connections for it (the
-- migration's own transaction). Writes to the table wait for it.
SET LOCAL statement_timeout = 0;
CREATE INDEX messages_pending_created_idx ON messages (created_at DESC, id DESC) WHERE status = 'pending';
