-- Usage kept in slots per database node, as on MariaDB (see the mysql
-- migration); SQLite has one writer, so it only ever writes slot 0, where
-- the rows from before are.
CREATE TABLE todo_usage_slots (
    user_id TEXT    NOT NULL,
    slot    INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    PRIMARY KEY (user_id, slot)
);

INSERT INTO todo_usage_slots (user_id, slot, entries, bytes)
SELECT user_id, 0, entries, bytes FROM todo_usage;

DROP TABLE todo_usage;

ALTER TABLE todo_usage_slots RENAME TO todo_usage;
