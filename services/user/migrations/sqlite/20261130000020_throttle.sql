-- Login and registration throttling counters (see the mysql migration).
CREATE TABLE login_throttle_pairs (
    name_hash     BLOB    NOT NULL,
    address       TEXT    NOT NULL,
    failures      INTEGER NOT NULL,
    last_failure  INTEGER NOT NULL,
    blocked_until INTEGER,
    PRIMARY KEY (name_hash, address)
);
CREATE INDEX login_throttle_pairs_last_failure ON login_throttle_pairs (last_failure);

CREATE TABLE throttle_windows (
    scope        INTEGER NOT NULL,
    address      TEXT    NOT NULL,
    slot         INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    touched      INTEGER NOT NULL,
    PRIMARY KEY (scope, address, slot)
);
CREATE INDEX throttle_windows_touched ON throttle_windows (scope, touched);
