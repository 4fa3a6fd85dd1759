-- A next page of the messages in one status: $1 of them, after the cursor ($2, the sort time of the
-- previous page's last message, and $3, its id). Filled in and run as first_page.sql is.
SELECT id, phone_number, content, status, attempts, next_attempt_at, provider_message_id, last_error, created_at, updated_at, sent_at,
       delivery_status, delivered_at, delivery_error,
       send_at, expires_at, priority, timezone, campaign
  FROM messages
 WHERE status = '{status}' AND ({sort_column}, id) < ($2, $3)
 ORDER BY {sort_column} DESC, id DESC
 LIMIT $1
