-- The claim suppresses a message whose number is in `opt_outs`, comparing it as the service stores a
-- message's `to`: `+` and digits. A number put on the list by plain SQL with spaces or dashes
-- (`+90 555 888 00 01`) matched no message, and the number was sent to. An INSERT now drops them, as the
-- API does; a number that is no E.164 number even so (no `+`, a leading 0, letters, 7 or 16 digits) is
-- refused, naming the rule, and so is an UPDATE to any other spelling.
CREATE FUNCTION opt_outs_spelled_plainly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.phone_number := translate(NEW.phone_number, ' -', '');
    END IF;
    IF NEW.phone_number !~ '^\+[1-9][0-9]{7,14}$' THEN
        RAISE EXCEPTION 'opt_outs.phone_number must be an E.164 number: + then 8 to 15 digits, the first not 0 (an INSERT drops spaces and dashes)'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

-- Rows stored so before: each number spelled plainly once, as of its earliest spelling. Those no E.164
-- number even so are left as they are (they match no message, as before). Locked first: a row another
-- session commits between the copy and the delete would otherwise be deleted uncopied.
LOCK TABLE opt_outs IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO opt_outs (phone_number, created_at)
SELECT translate(phone_number, ' -', ''), min(created_at)
  FROM opt_outs
 WHERE phone_number <> translate(phone_number, ' -', '')
   AND translate(phone_number, ' -', '') ~ '^\+[1-9][0-9]{7,14}$'
 GROUP BY 1
ON CONFLICT (phone_number) DO UPDATE SET created_at = least(opt_outs.created_at, EXCLUDED.created_at);
DELETE FROM opt_outs
 WHERE phone_number <> translate(phone_number, ' -', '')
   AND translate(phone_number, ' -', '') ~ '^\+[1-9][0-9]{7,14}$';

CREATE TRIGGER opt_outs_spelled_plainly BEFORE INSERT OR UPDATE OF phone_number ON opt_outs
    FOR EACH ROW EXECUTE FUNCTION opt_outs_spelled_plainly();
