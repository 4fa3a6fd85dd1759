-- The claim suppresses a message whose number is in `opt_outs`, comparing it as the service stores a
-- message's `to`: `+` and digits. A number put on the list by plain SQL with spaces or dashes
-- (`+90 555 888 00 01`) matched no message, and the number was sent to. An INSERT now stores it without
-- them, as the API does (SQLite's triggers cannot change the row: the one inserted is replaced by its
-- plain spelling); a number that is no E.164 number even so (no `+`, a leading 0, letters, 7 or 16
-- digits) is refused, naming the rule, and so is an UPDATE to any other spelling, or a NULL (which
-- SQLite's TEXT PRIMARY KEY would take). As on Postgres, but for one thing: a second spelling of a
-- number on the list is skipped whatever the statement's conflict clause (Postgres's key refuses a
-- plain INSERT of it).

-- Rows stored so before: each number spelled plainly once, as of its earliest spelling. Those no E.164
-- number even so are left as they are (they match no message, as before).
INSERT INTO opt_outs (phone_number, created_at)
SELECT replace(replace(phone_number, ' ', ''), '-', ''), min(created_at)
  FROM opt_outs
 WHERE phone_number <> replace(replace(phone_number, ' ', ''), '-', '')
   AND replace(replace(phone_number, ' ', ''), '-', '') GLOB '+[1-9]*'
   AND substr(replace(replace(phone_number, ' ', ''), '-', ''), 2) NOT GLOB '*[^0-9]*'
   AND length(replace(replace(phone_number, ' ', ''), '-', '')) BETWEEN 9 AND 16
 GROUP BY 1
ON CONFLICT (phone_number) DO UPDATE SET created_at = min(created_at, excluded.created_at);
DELETE FROM opt_outs
 WHERE phone_number <> replace(replace(phone_number, ' ', ''), '-', '')
   AND replace(replace(phone_number, ' ', ''), '-', '') GLOB '+[1-9]*'
   AND substr(replace(replace(phone_number, ' ', ''), '-', ''), 2) NOT GLOB '*[^0-9]*'
   AND length(replace(replace(phone_number, ' ', ''), '-', '')) BETWEEN 9 AND 16;

CREATE TRIGGER opt_outs_are_e164 BEFORE INSERT ON opt_outs
WHEN NEW.phone_number IS NULL OR NOT (replace(replace(NEW.phone_number, ' ', ''), '-', '') GLOB '+[1-9]*'
          AND substr(replace(replace(NEW.phone_number, ' ', ''), '-', ''), 2) NOT GLOB '*[^0-9]*'
          AND length(replace(replace(NEW.phone_number, ' ', ''), '-', '')) BETWEEN 9 AND 16)
BEGIN
    SELECT RAISE(ABORT, 'opt_outs.phone_number must be an E.164 number: + then 8 to 15 digits, the first not 0 (an INSERT drops spaces and dashes)');
END;

CREATE TRIGGER opt_outs_spelled_plainly AFTER INSERT ON opt_outs
WHEN NEW.phone_number <> replace(replace(NEW.phone_number, ' ', ''), '-', '')
BEGIN
    INSERT INTO opt_outs (phone_number, created_at)
    VALUES (replace(replace(NEW.phone_number, ' ', ''), '-', ''), NEW.created_at)
    ON CONFLICT (phone_number) DO NOTHING;
    DELETE FROM opt_outs WHERE phone_number = NEW.phone_number;
END;

CREATE TRIGGER opt_outs_updated_plainly BEFORE UPDATE OF phone_number ON opt_outs
WHEN NEW.phone_number IS NULL OR NOT (NEW.phone_number GLOB '+[1-9]*'
          AND substr(NEW.phone_number, 2) NOT GLOB '*[^0-9]*'
          AND length(NEW.phone_number) BETWEEN 9 AND 16)
BEGIN
    SELECT RAISE(ABORT, 'opt_outs.phone_number must be an E.164 number: + then 8 to 15 digits, the first not 0 (an INSERT drops spaces and dashes)');
END;
