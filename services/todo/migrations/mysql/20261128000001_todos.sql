CREATE TABLE todos (
    id         INT           NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- UUID from the user service
    title      VARCHAR(200)  NOT NULL,
    text       VARCHAR(2000) NOT NULL,
    done       BOOLEAN       NOT NULL DEFAULT FALSE,
    created_at BIGINT        NOT NULL,  -- Unix microseconds
    updated_at BIGINT        NULL,      -- NULL until first update
    -- Every query is "this user's entries, by id".
    KEY todos_user_id (user_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
