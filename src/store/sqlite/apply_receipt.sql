-- Applies pending receipt ?1 to message ?2, the one its provider id names, at ?3 (now, µs): the first
-- half of postgres/apply_receipt.sql (SQLite has no data-modifying CTE; the second half is
-- settle_applied_receipt.sql, in the same transaction, under the one writer). The message moves only
-- forward: not once final, an intermediate report only when it says something new and is not older than
-- the one in force; and only when it is `sent` under this provider id and no other message has that id.
UPDATE messages AS m
   SET delivery_status = r.status,
       delivery_reported_at = r.reported_at,
       delivered_at = CASE WHEN r.status = 'delivered' THEN r.reported_at END,
       delivery_error = CASE WHEN r.status = 'undelivered' THEN r.error END,
       updated_at = ?3
  FROM (SELECT provider_message_id, status, reported_at, error
          FROM receipts WHERE seq = ?1 AND outcome = 'pending') AS r
 WHERE m.id = ?2 AND m.status = 'sent' AND m.provider_message_id = r.provider_message_id
   AND m.delivery_status IS NOT 'delivered' AND m.delivery_status IS NOT 'undelivered'
   AND (r.status IN ('delivered', 'undelivered')
        OR (m.delivery_status IS NOT r.status
            AND (m.delivery_reported_at IS NULL OR m.delivery_reported_at <= r.reported_at)))
   AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.provider_message_id = r.provider_message_id AND o.id <> ?2)
