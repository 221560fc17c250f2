-- utf8mb4_bin is a PAD SPACE collation: it compared 'ann' and 'ann ' as
-- equal, so both unique checks and logins ignored trailing spaces. The NO
-- PAD binary collation compares byte for byte, as SQLite does.
ALTER TABLE users
    MODIFY username VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    MODIFY email    VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL;
