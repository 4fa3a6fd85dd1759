-- `attempts` is int4 and each claim adds one: a row a plain INSERT gave 2147483647 attempts failed every
-- claim it was in ("integer out of range"), and every claim took it first, so nothing was sent. An
-- INSERT gives at most 1,000,000 (the service's own give 0), which leaves a row two billion claims; a
-- CHECK would refuse the claim at its bound instead, so the bound is the INSERT's alone, as on SQLite.
-- Rows stored so before, still to be sent, come down to it.
CREATE FUNCTION messages_attempts_bounded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'messages.attempts must be at most 1000000 in an INSERT (each claim adds one)'
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER messages_attempts_bounded BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.attempts > 1000000) EXECUTE FUNCTION messages_attempts_bounded();

UPDATE messages SET attempts = 1000000 WHERE attempts > 1000000 AND status IN ('pending', 'sending');
