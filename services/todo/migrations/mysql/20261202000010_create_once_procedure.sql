-- An idempotent CreateToDo (with a request id) as one procedure, as the
-- plain writes became in 20261130000030_write_procedures.sql: one round trip
-- to the server instead of a transaction of seven or eight statements (and
-- the pool's ping after it). The same statements in the same order as the
-- transaction it replaces: this node's usage slot of the user locked first
-- (todo_begin_with_slot), then the request id looked up with a consistent
-- read taken after that lock (so a concurrent first call with the same key
-- through this node is seen once it committed), a repeat answered before
-- the quota is consulted, and otherwise the quota checked, the entry stored
-- and counted and the key remembered, all or nothing. Two first calls with
-- one key that both get past the lookup (through two Galera nodes) collide
-- on create_requests' primary key: error 1062 (or 1213 from certification)
-- reaches the caller after the rollback, which answers with the first
-- call's id or retries.
--
-- One row: (outcome, id) with outcome 0 = stored as id, 1 = refused by the
-- entry quota, 2 = refused by the byte quota (nothing stored for either),
-- 4 = the key was used within the retention with the same content: that
-- call's id, 5 = the key was used with other content (nothing stored).
CREATE PROCEDURE todo_create_once(
    IN p_user CHAR(36) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_request CHAR(36) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_fingerprint BINARY(32),
    IN p_title TEXT CHARACTER SET utf8mb4,
    IN p_text TEXT CHARACTER SET utf8mb4,
    IN p_done BOOLEAN,
    IN p_now BIGINT,
    IN p_remembered_since BIGINT,
    IN p_max_entries BIGINT,
    IN p_max_bytes BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_slot INT;
    DECLARE v_entries, v_bytes, v_new BIGINT;
    DECLARE v_id INT;
    DECLARE v_earlier_id INT DEFAULT NULL;
    DECLARE v_earlier_fingerprint BINARY(32);
    DECLARE v_earlier_at BIGINT;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET v_new = LENGTH(p_title) + LENGTH(p_text);
    CALL todo_begin_with_slot(p_user, v_slot);
    IF v_slot IS NULL THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'todo_usage slot missing right after creating it';
    END IF;
    BEGIN
        DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_earlier_id = NULL;
        SELECT todo_id, fingerprint, created_at
            INTO v_earlier_id, v_earlier_fingerprint, v_earlier_at
            FROM create_requests WHERE user_id = p_user AND request_id = p_request;
    END;
    IF v_earlier_id IS NOT NULL AND v_earlier_at >= p_remembered_since THEN
        ROLLBACK;
        SELECT IF(v_earlier_fingerprint = p_fingerprint, 4, 5) AS outcome, v_earlier_id AS id;
    ELSE
        -- A consistent (non-locking) read, as in todo_create.
        SELECT CAST(COALESCE(SUM(entries), 0) AS SIGNED), CAST(COALESCE(SUM(bytes), 0) AS SIGNED)
            INTO v_entries, v_bytes FROM todo_usage WHERE user_id = p_user;
        IF v_entries >= p_max_entries THEN
            ROLLBACK;
            SELECT 1 AS outcome, 0 AS id;
        ELSEIF v_bytes + v_new > p_max_bytes THEN
            ROLLBACK;
            SELECT 2 AS outcome, 0 AS id;
        ELSE
            INSERT INTO todos (user_id, title, text, done, created_at)
                VALUES (p_user, p_title, p_text, p_done, p_now);
            SET v_id = LAST_INSERT_ID();
            UPDATE todo_usage SET entries = entries + 1, bytes = bytes + v_new
                WHERE user_id = p_user AND slot = v_slot;
            IF v_earlier_id IS NOT NULL THEN
                -- An expired key not yet cleaned up is reused in place.
                UPDATE create_requests
                    SET todo_id = v_id, fingerprint = p_fingerprint, created_at = p_now
                    WHERE user_id = p_user AND request_id = p_request;
            ELSE
                INSERT INTO create_requests (todo_id, fingerprint, created_at, user_id, request_id)
                    VALUES (v_id, p_fingerprint, p_now, p_user, p_request);
            END IF;
            COMMIT;
            SELECT 0 AS outcome, v_id AS id;
        END IF;
    END IF;
END;
