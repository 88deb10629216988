-- Domains, users, their mailbox location and spam level (SQLite).
CREATE TABLE spam_levels (
    id      INTEGER PRIMARY KEY,
    name    VARCHAR(64) NOT NULL UNIQUE,
    cut     DOUBLE PRECISION NULL,
    discard DOUBLE PRECISION NULL
);
INSERT INTO spam_levels (id, name, cut, discard) VALUES
    (1, 'strict', 3, 8), (2, 'normal', 5, 12), (3, 'tolerant', 8, 20), (4, 'off', NULL, NULL);
CREATE TABLE domains (
    name       VARCHAR(253) PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE users (
    address          VARCHAR(320) PRIMARY KEY,
    local_part       VARCHAR(64)  NOT NULL,
    domain           VARCHAR(253) NOT NULL REFERENCES domains (name),
    password_hash    VARCHAR(255) NOT NULL,
    level_id         BIGINT       NOT NULL REFERENCES spam_levels (id),
    mailbox_location VARCHAR(1024) NULL,
    created_at       BIGINT       NOT NULL
);
CREATE INDEX users_domain ON users (domain);
