CREATE TABLE users (
    id            CHAR(36)     NOT NULL PRIMARY KEY,  -- UUID
    username      VARCHAR(100) NOT NULL COLLATE utf8mb4_bin,
    email         VARCHAR(254) NOT NULL COLLATE utf8mb4_bin,
    password_hash VARCHAR(255) NOT NULL,              -- argon2id PHC string
    created_at    BIGINT       NOT NULL,              -- Unix microseconds
    UNIQUE KEY users_username (username),
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
