-- Idempotent CreateToDo (AIP-155): the entry a (user, request_id) created,
-- kept 24 h. `fingerprint` is the SHA-256 of the request's content, so a
-- reused request_id with other content is recognised.
CREATE TABLE create_requests (
    user_id     TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,  -- UUID, lower-case hyphenated
    todo_id     INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,  -- Unix microseconds
    PRIMARY KEY (user_id, request_id)
);
-- Expiry deletes by age.
CREATE INDEX create_requests_created_at ON create_requests (created_at);
