-- Usage kept in slots, one per database node (a Galera node's
-- auto_increment_offset; 1 on a single server): a write locks and changes
-- only its own node's slot and reads the sum of all, so one user's writes
-- through different Galera nodes touch no common row and do not fail
-- certification against each other. Rows from before count in slot 0.
ALTER TABLE todo_usage
    ADD COLUMN slot INT NOT NULL DEFAULT 0 AFTER user_id,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (user_id, slot);
