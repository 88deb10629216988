-- Allow and block lists, per user and global, and each user's address book (PostgreSQL).
--
-- Patterns are stored in their normalised text form: an address (bob@example.net), a
-- domain (example.net) or a domain with its subdomains (.example.net), so a lookup is an
-- exact match on an indexed column.
--
-- Global entries have a table of their own instead of a NULL or '' owner: NULL would
-- break the unique key, and '' could not reference users. Per-user rows reference their
-- owner with ON DELETE CASCADE, so removing a user removes their lists and address book,
-- and a new user who later gets the same address does not inherit them.
CREATE TABLE user_list_entries (
    owner      VARCHAR(320) NOT NULL,
    pattern    VARCHAR(320) NOT NULL,
    kind       VARCHAR(8)   NOT NULL CHECK (kind IN ('allow', 'block')),
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (owner, pattern, kind),
    FOREIGN KEY (owner) REFERENCES users (address) ON DELETE CASCADE
);
CREATE TABLE global_list_entries (
    pattern    VARCHAR(320) NOT NULL,
    kind       VARCHAR(8)   NOT NULL CHECK (kind IN ('allow', 'block')),
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (pattern, kind)
);
CREATE TABLE address_book (
    owner      VARCHAR(320) NOT NULL,
    address    VARCHAR(320) NOT NULL,
    name       VARCHAR(255) NULL,
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (owner, address),
    FOREIGN KEY (owner) REFERENCES users (address) ON DELETE CASCADE
);
