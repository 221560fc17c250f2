-- Idempotent CreateToDo (AIP-155): the entry a (user, request_id) created,
-- kept 24 h. `fingerprint` is the SHA-256 of the request's content, so a
-- reused request_id with other content is recognised.
CREATE TABLE create_requests (
    user_id     CHAR(36)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_id  CHAR(36)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- UUID, lower-case hyphenated
    todo_id     INT        NOT NULL,
    fingerprint BINARY(32) NOT NULL,
    created_at  BIGINT     NOT NULL,  -- Unix microseconds
    PRIMARY KEY (user_id, request_id),
    -- Expiry deletes by age.
    KEY create_requests_created_at (created_at)
) ENGINE = InnoDB;
