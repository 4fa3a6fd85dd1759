-- Whether sending is on, for every replica at once: one row, seeded from AUTOSTART by the first
-- instance ever to start, changed by POST /scheduler/start|stop on any replica.
CREATE TABLE dispatcher_control (
    id         integer     PRIMARY KEY CHECK (id = 1),
    sending    boolean     NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text        NOT NULL
);

-- One row per running instance, refreshed every second; GET /scheduler lists the recent ones.
CREATE TABLE replicas (
    id         text        PRIMARY KEY,
    host       text        NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    in_flight  integer     NOT NULL,
    sending    boolean     NOT NULL
);
