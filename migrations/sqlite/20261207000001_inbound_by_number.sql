-- A keyword reply is applied only when no later one of its number is kept (`InboundLog::decided_after`):
-- one index probe per keyword reply.
CREATE INDEX inbound_messages_from_at_idx ON inbound_messages (from_number, at);
