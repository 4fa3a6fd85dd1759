-- One POST and its result in the history, once per claim (?1, the claim's token); nothing when the
-- message (?2) is gone. `WHERE` before `ON CONFLICT`: SQLite needs it to tell the upsert from a join.
INSERT INTO message_attempts
       (claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
        provider_message_id)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?2)
ON CONFLICT (claim_token) DO NOTHING
