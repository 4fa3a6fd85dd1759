-- The first page of the messages in one status, newest first by the status's sort column; $1 is the
-- page's size. The status and its sort column, in braces, are filled in once per status from the table
-- in store/list.rs, so that each status has a statement of its own, planned against its own partial
-- index. Both backends run it as it is ($n is a parameter to SQLite too).
SELECT id, phone_number, content, status, attempts, next_attempt_at, provider_message_id, last_error, created_at, updated_at, sent_at,
       delivery_status, delivered_at, delivery_error,
       send_at, expires_at, priority, timezone, campaign
  FROM messages
 WHERE status = '{status}'
 ORDER BY {sort_column} DESC, id DESC
 LIMIT $1
