-- CreateToDo, UpdateToDo and DeleteToDo as procedures: one round trip to the
-- server instead of six or seven (begin, lock this node's usage slot, sum the
-- slots, write, count, commit), with the same statements in the same order
-- inside, so the locking and the quota reasoning of the earlier migrations
-- hold unchanged. Each procedure runs its own transaction and rolls it back
-- on any error before passing the error on (a deadlock or certification
-- failure stays error 1213 for the caller to retry), so a connection never
-- goes back to the pool inside a transaction. A procedure keeps the sql_mode
-- it was created with: migrations run on the service's strict sessions.
-- Text parameters say utf8mb4 explicitly: a database created with another
-- default character set must not transcode titles and texts.

-- Begins a transaction holding this node's usage slot of the user locked and
-- returns the slot's number (NULL only if it vanished right after being
-- created). A missing slot is created first on its own, outside the
-- transaction: a locking read of a missing row locks the gap, and concurrent
-- first writers inserting into it would deadlock.
CREATE PROCEDURE todo_begin_with_slot(
    IN p_user CHAR(36) CHARACTER SET ascii COLLATE ascii_bin,
    OUT p_slot INT)
MODIFIES SQL DATA
BEGIN
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET p_slot = NULL;
    SET p_slot = NULL;
    START TRANSACTION;
    SELECT slot INTO p_slot FROM todo_usage
        WHERE user_id = p_user AND slot = @@auto_increment_offset FOR UPDATE;
    IF p_slot IS NULL THEN
        ROLLBACK;
        INSERT IGNORE INTO todo_usage (user_id, slot, entries, bytes)
            VALUES (p_user, @@auto_increment_offset, 0, 0);
        START TRANSACTION;
        SELECT slot INTO p_slot FROM todo_usage
            WHERE user_id = p_user AND slot = @@auto_increment_offset FOR UPDATE;
    END IF;
END;

-- Stores an entry if the user's quota admits it. One row: (outcome, id) with
-- outcome 0 = stored as id, 1 = refused by the entry quota, 2 = refused by
-- the byte quota (nothing stored). The count comes first: the UPDATE locks
-- this node's slot of the user (as todo_begin_with_slot's locking read
-- does, one statement sooner), and the sum read after it includes this
-- entry.
CREATE PROCEDURE todo_create(
    IN p_user CHAR(36) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_title TEXT CHARACTER SET utf8mb4,
    IN p_text TEXT CHARACTER SET utf8mb4,
    IN p_done BOOLEAN,
    IN p_created BIGINT,
    IN p_max_entries BIGINT,
    IN p_max_bytes BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_entries, v_bytes, v_new BIGINT;
    DECLARE v_id INT;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET v_new = LENGTH(p_title) + LENGTH(p_text);
    START TRANSACTION;
    -- entries + 1 always changes the row, so ROW_COUNT() is 0 only when the
    -- slot is missing (whether or not the client counts found rows).
    UPDATE todo_usage SET entries = entries + 1, bytes = bytes + v_new
        WHERE user_id = p_user AND slot = @@auto_increment_offset;
    IF ROW_COUNT() = 0 THEN
        -- Created on its own, as in todo_begin_with_slot.
        ROLLBACK;
        INSERT IGNORE INTO todo_usage (user_id, slot, entries, bytes)
            VALUES (p_user, @@auto_increment_offset, 0, 0);
        START TRANSACTION;
        UPDATE todo_usage SET entries = entries + 1, bytes = bytes + v_new
            WHERE user_id = p_user AND slot = @@auto_increment_offset;
        IF ROW_COUNT() = 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'todo_usage slot missing right after creating it';
        END IF;
    END IF;
    -- A consistent (non-locking) read after the slot is locked: it sees
    -- every earlier write through this node, and locking the other nodes'
    -- slots would have their replicated writes abort this one.
    SELECT CAST(COALESCE(SUM(entries), 0) AS SIGNED), CAST(COALESCE(SUM(bytes), 0) AS SIGNED)
        INTO v_entries, v_bytes FROM todo_usage WHERE user_id = p_user;
    IF v_entries > p_max_entries THEN
        ROLLBACK;
        SELECT 1 AS outcome, 0 AS id;
    ELSEIF v_bytes > p_max_bytes THEN
        ROLLBACK;
        SELECT 2 AS outcome, 0 AS id;
    ELSE
        INSERT INTO todos (user_id, title, text, done, created_at)
            VALUES (p_user, p_title, p_text, p_done, p_created);
        SET v_id = LAST_INSERT_ID();
        COMMIT;
        SELECT 0 AS outcome, v_id AS id;
    END IF;
END;

-- Replaces an entry's title and text (and done, unless NULL) if the byte
-- quota admits the growth; shrinking is always admitted. One row: outcome
-- 0 = updated, 2 = refused by the byte quota, 3 = no such entry of the user.
CREATE PROCEDURE todo_update(
    IN p_id INT,
    IN p_user CHAR(36) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_title TEXT CHARACTER SET utf8mb4,
    IN p_text TEXT CHARACTER SET utf8mb4,
    IN p_done BOOLEAN,
    IN p_updated BIGINT,
    IN p_max_bytes BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_slot INT;
    DECLARE v_entries, v_bytes, v_new BIGINT;
    DECLARE v_old BIGINT DEFAULT NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET v_new = LENGTH(p_title) + LENGTH(p_text);
    CALL todo_begin_with_slot(p_user, v_slot);
    IF v_slot IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'todo_usage slot missing right after creating it';
    END IF;
    BEGIN
        DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_old = NULL;
        SELECT CAST(LENGTH(title) + LENGTH(text) AS SIGNED) INTO v_old
            FROM todos WHERE id = p_id AND user_id = p_user FOR UPDATE;
    END;
    IF v_old IS NULL THEN
        ROLLBACK;
        SELECT 3 AS outcome;
    ELSE
        SELECT CAST(COALESCE(SUM(entries), 0) AS SIGNED), CAST(COALESCE(SUM(bytes), 0) AS SIGNED)
            INTO v_entries, v_bytes FROM todo_usage WHERE user_id = p_user;
        IF v_new > v_old AND v_bytes - v_old + v_new > p_max_bytes THEN
            ROLLBACK;
            SELECT 2 AS outcome;
        ELSE
            UPDATE todos SET title = p_title, text = p_text, done = COALESCE(p_done, done),
                    updated_at = p_updated
                WHERE id = p_id AND user_id = p_user;
            UPDATE todo_usage SET bytes = bytes + v_new - v_old
                WHERE user_id = p_user AND slot = v_slot;
            COMMIT;
            SELECT 0 AS outcome;
        END IF;
    END IF;
END;

-- Deletes an entry and uncounts it. One row: outcome 0 = deleted, 3 = no
-- such entry of the user.
CREATE PROCEDURE todo_delete(
    IN p_id INT,
    IN p_user CHAR(36) CHARACTER SET ascii COLLATE ascii_bin)
MODIFIES SQL DATA
BEGIN
    DECLARE v_slot INT;
    DECLARE v_old BIGINT DEFAULT NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    CALL todo_begin_with_slot(p_user, v_slot);
    IF v_slot IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'todo_usage slot missing right after creating it';
    END IF;
    BEGIN
        DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_old = NULL;
        SELECT CAST(LENGTH(title) + LENGTH(text) AS SIGNED) INTO v_old
            FROM todos WHERE id = p_id AND user_id = p_user FOR UPDATE;
    END;
    IF v_old IS NULL THEN
        ROLLBACK;
        SELECT 3 AS outcome;
    ELSE
        DELETE FROM todos WHERE id = p_id AND user_id = p_user;
        UPDATE todo_usage SET entries = entries - 1, bytes = bytes - v_old
            WHERE user_id = p_user AND slot = v_slot;
        COMMIT;
        SELECT 0 AS outcome;
    END IF;
END;
