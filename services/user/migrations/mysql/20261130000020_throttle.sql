-- Login and registration throttling counters, shared by every user-service
-- instance over this database (see throttle.rs). Names are kept as SHA-256
-- digests: a mistyped password entered as a username is not stored.
CREATE TABLE login_throttle_pairs (
    name_hash     BINARY(32)  NOT NULL,
    address       VARCHAR(45) CHARACTER SET ascii NOT NULL,  -- IPv4, or an IPv6 /64
    failures      BIGINT      NOT NULL,
    last_failure  BIGINT      NOT NULL,                      -- Unix microseconds
    blocked_until BIGINT      NULL,
    PRIMARY KEY (name_hash, address),
    KEY login_throttle_pairs_last_failure (last_failure)
) ENGINE = InnoDB;

-- Fixed-window counts per address: scope 1 failed logins, 2 registrations;
-- one slot per database node (its auto_increment_offset), so that attempts
-- from one address through different Galera nodes share no row.
CREATE TABLE throttle_windows (
    scope        SMALLINT    NOT NULL,
    address      VARCHAR(45) CHARACTER SET ascii NOT NULL,
    slot         INT         NOT NULL,
    events       BIGINT      NOT NULL,
    window_start BIGINT      NOT NULL,
    touched      BIGINT      NOT NULL,
    PRIMARY KEY (scope, address, slot),
    KEY throttle_windows_touched (scope, touched)
) ENGINE = InnoDB;
