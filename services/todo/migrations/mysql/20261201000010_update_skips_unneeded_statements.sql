-- todo_update without the statements its outcome does not depend on: the
-- sum over the user's slots only matters when the entry grows (only then can
-- the byte quota refuse it), and the slot's byte count only changes when the
-- entry's size does. UpdateToDo usually keeps the size (a title or a done
-- flag changed in place): then it runs five statements instead of seven.
-- Locks are taken in the same order as before (this node's slot, then the
-- entry). CREATE OR REPLACE swaps the procedure in one step, so calls made
-- while this migration runs find either version.
CREATE OR REPLACE PROCEDURE todo_update(
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
        IF v_new > v_old THEN
            SELECT CAST(COALESCE(SUM(entries), 0) AS SIGNED), CAST(COALESCE(SUM(bytes), 0) AS SIGNED)
                INTO v_entries, v_bytes FROM todo_usage WHERE user_id = p_user;
        END IF;
        IF v_new > v_old AND v_bytes - v_old + v_new > p_max_bytes THEN
            ROLLBACK;
            SELECT 2 AS outcome;
        ELSE
            UPDATE todos SET title = p_title, text = p_text, done = COALESCE(p_done, done),
                    updated_at = p_updated
                WHERE id = p_id AND user_id = p_user;
            IF v_new <> v_old THEN
                UPDATE todo_usage SET bytes = bytes + v_new - v_old
                    WHERE user_id = p_user AND slot = v_slot;
            END IF;
            COMMIT;
            SELECT 0 AS outcome;
        END IF;
    END IF;
END;
