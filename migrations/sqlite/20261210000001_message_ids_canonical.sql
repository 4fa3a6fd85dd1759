-- A message's id is TEXT here, compared as written, and the service finds a claimed message again by its
-- id in lowercase hyphenated form. A plain INSERT naming an id in capitals (a GUID from .NET or SQL
-- Server) was claimed and POSTed, and then no result could be recorded: its lease ran out, it was
-- rescued and POSTed again, every 30 s, for good; an id that is no UUID at all failed every claim it was
-- in. An id in capitals is now stored in lowercase, and any other spelling is refused at the INSERT
-- (Postgres's uuid type does both by itself). Rows already stored are mended the same way; a pending one
-- whose id is no UUID is failed, saying why: it could never be sent once.

-- 8-4-4-4-12 hex digits, in either case.
CREATE TRIGGER messages_id_is_a_uuid BEFORE INSERT ON messages
    WHEN NOT (    length(NEW.id) = 36
              AND substr(NEW.id, 9, 1) = '-' AND substr(NEW.id, 14, 1) = '-'
              AND substr(NEW.id, 19, 1) = '-' AND substr(NEW.id, 24, 1) = '-'
              AND length(replace(NEW.id, '-', '')) = 32
              AND lower(replace(NEW.id, '-', '')) NOT GLOB '*[^0-9a-f]*')
BEGIN
    SELECT RAISE(ABORT, 'messages.id must be a UUID written as 8-4-4-4-12 hex digits, or left to its default');
END;

-- SQLite's triggers cannot change NEW: the row is mended right after, as `messages_due_at_send_at` does.
CREATE TRIGGER messages_id_in_lowercase AFTER INSERT ON messages
    WHEN NEW.id <> lower(NEW.id)
BEGIN
    UPDATE messages SET id = lower(NEW.id) WHERE seq = NEW.seq;
END;

UPDATE messages SET id = lower(id)
 WHERE id <> lower(id)
   AND length(id) = 36 AND length(replace(id, '-', '')) = 32
   AND lower(replace(id, '-', '')) NOT GLOB '*[^0-9a-f]*'
   AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.id = lower(messages.id));

UPDATE messages
   SET status = 'failed', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       last_error = 'its id is not a UUID (8-4-4-4-12 hex digits): it could never be sent once',
       updated_at = CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)
 WHERE status IN ('pending', 'sending')
   AND (id <> lower(id) OR length(id) <> 36 OR length(replace(id, '-', '')) <> 32
        OR substr(id, 9, 1) <> '-' OR substr(id, 14, 1) <> '-' OR substr(id, 19, 1) <> '-' OR substr(id, 24, 1) <> '-'
        OR replace(id, '-', '') GLOB '*[^0-9a-f]*');
