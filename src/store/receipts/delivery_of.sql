-- A message's delivery state as a receipt just left it, for the event that reports it: message $1. SQLite
-- reads it after applying a receipt; Postgres has it from apply_receipts.sql's RETURNING.
SELECT delivery_status, delivered_at, delivery_error, provider_message_id FROM messages WHERE id = $1
