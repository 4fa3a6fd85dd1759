-- The dead letters, most recent failure first. `failed` is final, so updated_at is when it failed.
CREATE INDEX messages_failed_idx ON messages (updated_at DESC, id DESC) WHERE status = 'failed';
