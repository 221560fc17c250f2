CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,   -- UUID
    username      TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,               -- argon2id PHC string
    created_at    INTEGER NOT NULL                -- Unix microseconds
);
CREATE UNIQUE INDEX users_username ON users (username);
CREATE UNIQUE INDEX users_email ON users (email);
