-- Mailbox stores (SQLite): each user's quota, and deliver's marks per
-- (message, recipient, store).

-- Bytes a user's mailbox may hold; NULL: no quota. Maildir enforces it through
-- maildirsize; an LMTP server applies its own and pampa honours its replies.
ALTER TABLE users ADD COLUMN quota_bytes BIGINT NULL;

-- What deliver knows of each copy, so that a retry never writes a copy twice and a
-- failing store never holds back another one:
--   sending:   an LMTP transaction began and its replies were not recorded (a crash
--              in between): the retry delivers again, with the same
--              X-Pampa-Delivery-Id header, which the server's Sieve can drop;
--   delivered: the store has it;
--   deferred:  the store said "later" (4xx, over quota, unreachable), since
--              first_failed_at; first_full_at is the first "mailbox full", from which
--              the quota grace period counts;
--   failed:    the store refused it for good (5xx), or the grace period ran out.
-- `store` is the store's spelling and the copy's folder (`lmtp://10.0.0.5:24 INBOX`):
-- a recovered copy (Quarantine, then INBOX) is a copy of its own.
CREATE TABLE delivery_marks (
    message_id      VARCHAR(64)  NOT NULL,
    recipient       VARCHAR(320) NOT NULL,
    store           VARCHAR(255) NOT NULL,
    state           VARCHAR(16)  NOT NULL,
    detail          VARCHAR(512) NULL,
    first_failed_at BIGINT       NULL,
    first_full_at   BIGINT       NULL,
    updated_at      BIGINT       NOT NULL,
    PRIMARY KEY (message_id, recipient, store)
);
CREATE INDEX delivery_marks_updated ON delivery_marks (updated_at);
