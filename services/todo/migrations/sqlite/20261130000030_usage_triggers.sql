-- Usage counted by triggers, in the statement that writes the entry: each
-- CreateToDo, UpdateToDo and DeleteToDo is then one statement, with the quota
-- check in its WHERE clause, instead of a transaction of five or six. The
-- service's write lock already lets one writer in at a time, so the check
-- and the count cannot interleave with another write; what the statements
-- cost here is mostly the hand-off of each one to the connection's thread.
-- Only slot 0 is written, as before (see the slots migration).
CREATE TRIGGER todo_usage_count_insert AFTER INSERT ON todos
BEGIN
    INSERT INTO todo_usage (user_id, slot, entries, bytes)
        VALUES (NEW.user_id, 0, 1, LENGTH(CAST(NEW.title AS BLOB)) + LENGTH(CAST(NEW.text AS BLOB)))
        ON CONFLICT (user_id, slot) DO UPDATE
            SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER todo_usage_count_update AFTER UPDATE OF title, text ON todos
BEGIN
    UPDATE todo_usage
        SET bytes = bytes
            + LENGTH(CAST(NEW.title AS BLOB)) + LENGTH(CAST(NEW.text AS BLOB))
            - LENGTH(CAST(OLD.title AS BLOB)) - LENGTH(CAST(OLD.text AS BLOB))
        WHERE user_id = NEW.user_id AND slot = 0;
END;

CREATE TRIGGER todo_usage_count_delete AFTER DELETE ON todos
BEGIN
    UPDATE todo_usage
        SET entries = entries - 1,
            bytes = bytes - LENGTH(CAST(OLD.title AS BLOB)) - LENGTH(CAST(OLD.text AS BLOB))
        WHERE user_id = OLD.user_id AND slot = 0;
END;
