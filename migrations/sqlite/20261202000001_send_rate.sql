-- The pace of every process on this file: see migrations/postgres. Times in µs since the epoch.
CREATE TABLE send_rate (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    next_free_at    INTEGER NOT NULL DEFAULT 0,
    throttled_until INTEGER,
    pause_seconds   REAL    NOT NULL DEFAULT 0,
    cut_rate        REAL,
    cut_at          INTEGER,
    granted         INTEGER NOT NULL DEFAULT 0
);
INSERT INTO send_rate (id) VALUES (1);
