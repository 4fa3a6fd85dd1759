-- A message's id is TEXT here, compared as written, and the service finds a claimed message again by its
-- id in lowercase hyphenated form. A plain INSERT naming an id in capitals (a GUID from .NET or SQL
-- Server) was claimed and POSTed, and then no result could be recorded: its lease ran out, it was
-- rescued and POSTed again, every 30 s, for good; an id that is no UUID at all failed every claim it was
-- in. An id in capitals is now stored in lowercase, and any other spelling is refused at the INSERT or
-- an UPDATE (Postgres's uuid type does both by itself). Rows already stored are mended the same way; a pending one
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

-- An id in capitals that is stored already in lowercase is the same message: the row is skipped, as
-- Postgres skips it under INSERT OR IGNORE or ON CONFLICT DO NOTHING (a plain INSERT there fails on the
-- key instead). Inserted, it would be a second row whose lowercasing below the statement's OR IGNORE
-- skips in turn, claimed and POSTed under an id that names the first.
CREATE TRIGGER messages_id_once_in_any_case BEFORE INSERT ON messages
    WHEN NEW.id <> lower(NEW.id) AND EXISTS (SELECT 1 FROM messages WHERE id = lower(NEW.id))
BEGIN
    SELECT RAISE(IGNORE);
END;

-- SQLite's triggers cannot change NEW: the row is mended right after, as `messages_due_at_send_at` does.
CREATE TRIGGER messages_id_in_lowercase AFTER INSERT ON messages
    WHEN NEW.id <> lower(NEW.id)
BEGIN
    UPDATE messages SET id = lower(NEW.id) WHERE seq = NEW.seq;
END;

-- An id changed by hand is held to what the service can find again: lowercase 8-4-4-4-12.
CREATE TRIGGER messages_id_stays_a_uuid BEFORE UPDATE OF id ON messages
    WHEN NOT (    length(NEW.id) = 36
              AND substr(NEW.id, 9, 1) = '-' AND substr(NEW.id, 14, 1) = '-'
              AND substr(NEW.id, 19, 1) = '-' AND substr(NEW.id, 24, 1) = '-'
              AND length(replace(NEW.id, '-', '')) = 32
              AND replace(NEW.id, '-', '') NOT GLOB '*[^0-9a-f]*')
BEGIN
    SELECT RAISE(ABORT, 'messages.id must be a UUID written as 8-4-4-4-12 lowercase hex digits');
END;

UPDATE messages SET id = lower(id)
 WHERE id <> lower(id)
   AND length(id) = 36 AND length(replace(id, '-', '')) = 32
   AND lower(replace(id, '-', '')) NOT GLOB '*[^0-9a-f]*'
   AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.id = lower(messages.id))
   -- History by hand under the id as written keeps it (the key would break); the row is failed below.
   AND NOT EXISTS (SELECT 1 FROM message_attempts a WHERE a.message_id = messages.id);

UPDATE messages
   SET status = 'failed', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       last_error = 'its id is not a UUID (8-4-4-4-12 hex digits): it could never be sent once',
       updated_at = CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)
 WHERE status IN ('pending', 'sending')
   AND (id <> lower(id) OR length(id) <> 36 OR length(replace(id, '-', '')) <> 32
        OR substr(id, 9, 1) <> '-' OR substr(id, 14, 1) <> '-' OR substr(id, 19, 1) <> '-' OR substr(id, 24, 1) <> '-'
        OR replace(id, '-', '') GLOB '*[^0-9a-f]*');
