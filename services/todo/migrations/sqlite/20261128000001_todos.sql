CREATE TABLE todos (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,  -- never reused
    user_id    TEXT    NOT NULL,                            -- UUID from the user service
    title      TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    done       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,                            -- Unix microseconds
    updated_at INTEGER                                      -- NULL until first update
);
-- Every query is "this user's entries, by id".
CREATE INDEX todos_user_id ON todos (user_id, id);
