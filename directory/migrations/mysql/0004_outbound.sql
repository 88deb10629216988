-- Outbound mail (MariaDB/MySQL): who may send as what, each sender's limits and flag, the
-- DKIM keys, and the relay's queue.

-- An address a user may also send as (the envelope sender and the From: header). The
-- user's own address is always allowed and is not listed here.
CREATE TABLE sender_aliases (
    user_address VARCHAR(320) NOT NULL,
    alias        VARCHAR(320) NOT NULL,
    created_at   BIGINT       NOT NULL,
    PRIMARY KEY (user_address, alias),
    FOREIGN KEY (user_address) REFERENCES users (address) ON DELETE CASCADE
);

-- One row per user who has outbound settings or a flag; a missing row means the
-- defaults of [submission] and "not flagged". NULL limits mean "the default".
-- The flag is set by the relay when outbound mail scores as spam (a compromised
-- account, most often), and cleared by an operator.
CREATE TABLE outbound_profiles (
    address             VARCHAR(320) PRIMARY KEY,
    messages_per_hour   BIGINT       NULL,
    recipients_per_hour BIGINT       NULL,
    flagged_at          BIGINT       NULL,
    flag_reason         VARCHAR(255) NULL,
    flag_message_id     VARCHAR(64)  NULL,
    updated_at          BIGINT       NOT NULL,
    FOREIGN KEY (address) REFERENCES users (address) ON DELETE CASCADE
);

-- A domain's DKIM signing key (PEM, PKCS#8). One key per domain; a new key replaces
-- the old one under a new selector. VARCHAR, not TEXT: sqlx's Any driver reads a MySQL
-- TEXT column as bytes, not as a string.
CREATE TABLE dkim_keys (
    domain      VARCHAR(253) PRIMARY KEY,
    selector    VARCHAR(63)  NOT NULL,
    algorithm   VARCHAR(16)  NOT NULL,
    private_key VARCHAR(8000) NOT NULL,
    created_at  BIGINT       NOT NULL
);

-- The relay's working copy of its queue: one row per (message, recipient), written
-- from mail.outbound and advanced by each attempt. The event log has every change
-- (mail.relay.attempt, mail.relay.final), so the table can be rebuilt from it.
CREATE TABLE relay_queue (
    message_id      VARCHAR(64)  NOT NULL,
    recipient       VARCHAR(320) NOT NULL,
    domain          VARCHAR(253) NOT NULL,
    sender          VARCHAR(320) NOT NULL,
    submitted_by    VARCHAR(320) NOT NULL,
    event_id        VARCHAR(64)  NOT NULL,
    blob_key        VARCHAR(255) NOT NULL,
    blob_size       BIGINT       NOT NULL,
    blob_sha256     VARCHAR(64)  NOT NULL,
    status          VARCHAR(16)  NOT NULL,
    attempts        BIGINT       NOT NULL,
    queued_at       BIGINT       NOT NULL,
    next_attempt_at BIGINT       NOT NULL,
    lease_until     BIGINT       NOT NULL,
    last_reply      VARCHAR(512) NULL,
    finished_at     BIGINT       NULL,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX relay_queue_due ON relay_queue (status, next_attempt_at);
