-- Whether sending is on, for every process on this file: see migrations/postgres. Times in µs.
CREATE TABLE dispatcher_control (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sending    INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    changed_by TEXT    NOT NULL
);

CREATE TABLE replicas (
    id         TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    in_flight  INTEGER NOT NULL,
    sending    INTEGER NOT NULL
);
