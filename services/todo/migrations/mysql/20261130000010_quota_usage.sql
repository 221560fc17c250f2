-- Each user's entry count and stored bytes (title + text, UTF-8), kept up to
-- date by every write in the same transaction. Writers lock the user's row
-- first (SELECT ... FOR UPDATE), so one user's writes are serialised and the
-- quotas hold under concurrency.
CREATE TABLE todo_usage (
    user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    entries BIGINT NOT NULL,
    bytes   BIGINT NOT NULL   -- LENGTH() is bytes on MariaDB
) ENGINE = InnoDB;

INSERT INTO todo_usage (user_id, entries, bytes)
SELECT user_id, COUNT(*), SUM(LENGTH(title) + LENGTH(text)) FROM todos GROUP BY user_id;
