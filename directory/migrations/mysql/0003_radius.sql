-- RADIUS: the NAS clients allowed to talk to the server, and each user's RADIUS profile
-- (MariaDB/MySQL).
--
-- `network` is the normalised CIDR (`192.0.2.7/32`, `10.0.0.0/24`, `2001:db8::/32`),
-- written by the directory code, never by hand: the uniqueness and the exact-match lookup
-- of the most specific network rely on that one spelling. Matching an IP to its network
-- is done in Rust, because the three backends share no CIDR type.
--
-- Booleans are 0/1 integers rather than BOOLEAN: sqlx's `Any` driver decodes neither
-- MySQL's TINYINT(1) nor SQLite's BOOLEAN affinity as a bool, but all three as integers.
CREATE TABLE nas_clients (
    id                            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    network                       VARCHAR(43)  NOT NULL UNIQUE,
    secret                        VARCHAR(128) NOT NULL,
    require_message_authenticator SMALLINT     NOT NULL DEFAULT 1
        CHECK (require_message_authenticator IN (0, 1)),
    description                   VARCHAR(255) NULL,
    created_at                    BIGINT       NOT NULL
);

-- The RADIUS profile has a table of its own, one row per user who has one, rather than
-- columns on `users`:
-- - most users are mail-only, and a missing row is "no RADIUS settings";
-- - `chap_secret` is a cleartext password (CHAP and MS-CHAPv2 must have the password
--   itself on the server side, a hash cannot answer them). Keeping it out of `users` lets
--   a deployment grant the mail roles no access to this table at all;
-- - ON DELETE CASCADE removes the profile with the user, so a new user who later gets the
--   same address does not inherit a secret or a framed IP.
-- Every setting is nullable: NULL means "not set" (no reply attribute, no limit).
CREATE TABLE radius_profiles (
    address          VARCHAR(320) PRIMARY KEY,
    chap_secret      VARCHAR(255) NULL,
    session_timeout  BIGINT       NULL,
    idle_timeout     BIGINT       NULL,
    framed_ip        VARCHAR(15)  NULL,
    framed_pool      VARCHAR(253) NULL,
    class            VARCHAR(253) NULL,
    simultaneous_use BIGINT       NULL,
    updated_at       BIGINT       NOT NULL,
    FOREIGN KEY (address) REFERENCES users (address) ON DELETE CASCADE
);
