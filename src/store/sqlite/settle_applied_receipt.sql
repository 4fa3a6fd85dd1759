-- The second half of applying receipt ?1 to message ?2 (after apply_receipt.sql): ?3 whether the message
-- moved, ?4 now (µs). Answers the outcome, or no row when the receipt was not pending. A receipt whose
-- message is not sent under its id is left pending, whatever else has the id, and answers so (see
-- postgres/apply_receipts.sql).
UPDATE receipts
   SET outcome = o.outcome,
       message_id = CASE WHEN o.outcome IN ('applied', 'ignored') THEN ?2 END,
       settled_at = CASE WHEN o.outcome <> 'pending' THEN ?4 END
  FROM (SELECT CASE WHEN ?3 THEN 'applied'
                    WHEN NOT EXISTS (SELECT 1 FROM messages m
                                      WHERE m.id = ?2 AND m.status = 'sent'
                                        AND m.provider_message_id = r.provider_message_id)
                    THEN 'pending'
                    WHEN EXISTS (SELECT 1 FROM messages x
                                  WHERE x.provider_message_id = r.provider_message_id AND x.id <> ?2)
                    THEN 'ambiguous'
                    ELSE 'ignored' END AS outcome
          FROM receipts r WHERE r.seq = ?1) AS o
 WHERE receipts.seq = ?1 AND receipts.outcome = 'pending'
RETURNING outcome
