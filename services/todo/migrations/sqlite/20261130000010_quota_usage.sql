-- Each user's entry count and stored bytes (title + text, UTF-8), kept up to
-- date by every write in the same transaction (writers are serialised by
-- the service's write lock), so the quotas hold under concurrency.
CREATE TABLE todo_usage (
    user_id TEXT    NOT NULL PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);

-- LENGTH counts characters on text, bytes on blobs.
INSERT INTO todo_usage (user_id, entries, bytes)
SELECT user_id, COUNT(*), SUM(LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(text AS BLOB)))
FROM todos GROUP BY user_id;
