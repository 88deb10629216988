-- DKIM key rotation (PostgreSQL): a domain's next key, made before its TXT record is
-- published. The relay keeps signing with the current key (dkim_keys) until
-- `pampa dkim activate` makes this one current, so no mail goes out signed with a
-- key that receivers cannot find yet.
CREATE TABLE dkim_next_keys (
    domain      VARCHAR(253) PRIMARY KEY,
    selector    VARCHAR(63)  NOT NULL,
    algorithm   VARCHAR(16)  NOT NULL,
    private_key TEXT         NOT NULL,
    created_at  BIGINT       NOT NULL
);
