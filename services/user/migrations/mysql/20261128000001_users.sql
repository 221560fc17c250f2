-- username and email compare exactly (binary collation), like SQLite; they
-- are never selected, so the binary column flag never reaches a decoder.
CREATE TABLE users (
    id            CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,  -- UUID
    username      VARCHAR(100) COLLATE utf8mb4_bin NOT NULL,
    email         VARCHAR(254) COLLATE utf8mb4_bin NOT NULL,
    password_hash VARCHAR(255) NOT NULL,                             -- argon2id PHC string
    created_at    BIGINT       NOT NULL,                             -- Unix microseconds
    UNIQUE KEY users_username (username),
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
