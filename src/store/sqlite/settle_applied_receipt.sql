-- The second half of applying receipt ?1 to message ?2 (after apply_receipt.sql): ?3 whether the message
-- moved, ?4 now (µs). Answers the outcome, or no row when the receipt was not pending.
UPDATE receipts
   SET outcome = CASE WHEN ?3 THEN 'applied'
                      WHEN EXISTS (SELECT 1 FROM messages o
                                    WHERE o.provider_message_id = receipts.provider_message_id AND o.id <> ?2)
                      THEN 'ambiguous'
                      ELSE 'ignored' END,
       message_id = CASE WHEN NOT ?3 AND EXISTS (SELECT 1 FROM messages o
                                                  WHERE o.provider_message_id = receipts.provider_message_id
                                                    AND o.id <> ?2)
                         THEN NULL ELSE ?2 END,
       settled_at = ?4
 WHERE seq = ?1 AND outcome = 'pending'
RETURNING outcome
