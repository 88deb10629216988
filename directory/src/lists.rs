//! Allow and block lists, per user and global, and each user's address book.
//!
//! A list entry is a [`ListPattern`]: an exact address, a domain, or a domain with its
//! subdomains. Patterns are normalised on the way in and stored as text, so the `whitelist`
//! stage can find every entry that concerns a sender with one indexed lookup: it asks for
//! the few pattern texts that could match ([`ListPattern::candidates`]) instead of loading
//! whole lists.

use std::{fmt, str::FromStr};

use serde::{Serialize, Serializer};
use sqlx::{any::AnyRow, Row};

use crate::{
    address::normalize_domain,
    store::{is_unique_violation, now_unix},
    Address, Directory, DirectoryError,
};

/// Which list: senders to let through, or senders to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// Mail from these senders goes to the inbox, whatever its score.
    Allow,
    /// Mail from these senders is discarded.
    Block,
}

impl ListKind {
    /// Both kinds.
    pub const ALL: [ListKind; 2] = [ListKind::Allow, ListKind::Block];

    /// `allow` or `block`, as stored and as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ListKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| format!("unknown list kind {text:?} (use allow or block)"))
    }
}

/// What a list entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListPattern {
    /// Exactly this address: `bob@example.net`.
    Address(Address),
    /// Any address of exactly this domain, not of its subdomains: `example.net`.
    Domain(String),
    /// Any address of this domain or of any subdomain: `.example.net` (typed as
    /// `.example.net` or `*.example.net`).
    Subdomains(String),
}

impl ListPattern {
    /// Parses and normalises a pattern.
    ///
    /// Accepted forms: `bob@example.net`; `example.net`; `.example.net` or
    /// `*.example.net`. `*@example.net` and `@example.net` are taken as `example.net`, because
    /// that is how other filters (SpamAssassin's `whitelist_from`) spell "the whole domain".
    /// A bad address is [`DirectoryError::InvalidAddress`], a bad domain
    /// [`DirectoryError::InvalidDomain`]; both name the text as given.
    pub fn parse(text: &str) -> Result<Self, DirectoryError> {
        let trimmed = text.trim();
        let bad_domain = || DirectoryError::InvalidDomain(text.to_owned());
        if let Some(domain) = trimmed
            .strip_prefix("*@")
            .or_else(|| trimmed.strip_prefix('@'))
        {
            return ListPattern::parse_domain(domain).map_err(|_| bad_domain());
        }
        if trimmed.contains('@') {
            return Address::parse(trimmed)
                .map(ListPattern::Address)
                .map_err(|_| DirectoryError::InvalidAddress(text.to_owned()));
        }
        ListPattern::parse_domain(trimmed).map_err(|_| bad_domain())
    }

    fn parse_domain(text: &str) -> Result<Self, DirectoryError> {
        match text.strip_prefix("*.").or_else(|| text.strip_prefix('.')) {
            // `..example.net` or `*..x` would otherwise slip through as a subdomain pattern
            // of a valid domain after the first dot is taken off.
            Some(rest) if rest.starts_with('.') => {
                Err(DirectoryError::InvalidDomain(text.to_owned()))
            }
            Some(rest) => Ok(ListPattern::Subdomains(normalize_domain(rest)?)),
            None => Ok(ListPattern::Domain(normalize_domain(text)?)),
        }
    }

    /// Whether `address` is matched by this pattern.
    pub fn matches(&self, address: &Address) -> bool {
        match self {
            ListPattern::Address(a) => a == address,
            ListPattern::Domain(d) => address.domain() == d,
            ListPattern::Subdomains(d) => {
                let domain = address.domain();
                domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
        }
    }

    /// The stored text of every pattern that matches `address`: the address itself, its
    /// domain, and `.suffix` for each of the domain's suffixes (`.mail.example.net`,
    /// `.example.net`, `.net`).
    pub fn candidates(address: &Address) -> Vec<String> {
        let domain = address.domain();
        let mut out = vec![address.to_string(), domain.to_owned()];
        let mut rest = domain;
        loop {
            out.push(format!(".{rest}"));
            match rest.split_once('.') {
                Some((_, tail)) => rest = tail,
                None => break,
            }
        }
        out
    }

    /// What the pattern covers, in words, for tables.
    pub fn describe(&self) -> &'static str {
        match self {
            ListPattern::Address(_) => "address",
            ListPattern::Domain(_) => "domain",
            ListPattern::Subdomains(_) => "domain and subdomains",
        }
    }
}

impl fmt::Display for ListPattern {
    /// The normalised text, as stored: `bob@example.net`, `example.net`, `.example.net`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListPattern::Address(a) => write!(f, "{a}"),
            ListPattern::Domain(d) => f.write_str(d),
            ListPattern::Subdomains(d) => write!(f, ".{d}"),
        }
    }
}

impl FromStr for ListPattern {
    type Err = DirectoryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ListPattern::parse(text)
    }
}

impl Serialize for ListPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One allow or block entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListEntry {
    /// The user it belongs to; `None` for a global entry, which applies to every user.
    pub owner: Option<String>,
    /// Allow or block.
    pub kind: ListKind,
    /// What it matches.
    pub pattern: ListPattern,
    /// When it was added (Unix seconds).
    pub created_at: i64,
}

/// One address in a user's address book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    /// The address (normalised when stored).
    pub address: String,
    /// The display name, if one is known.
    pub name: Option<String>,
}

impl Contact {
    /// A contact to add.
    pub fn new(address: impl Into<String>, name: Option<String>) -> Self {
        Contact {
            address: address.into(),
            name,
        }
    }
}

/// What an address-book import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Addresses added.
    pub added: usize,
    /// Addresses left out because the book already had them, or because they came twice.
    pub skipped: usize,
}

/// Where a [`ListMatch`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListScope {
    /// The recipient's own list.
    User,
    /// The global list.
    Global,
    /// The recipient's address book (always an allow).
    AddressBook,
}

/// An entry that concerns one of the senders asked about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ListMatch {
    /// Whose entry it is.
    pub scope: ListScope,
    /// Allow or block; [`ListScope::AddressBook`] entries are [`ListKind::Allow`].
    pub kind: ListKind,
    /// The entry's pattern (an exact address for the address book).
    pub pattern: ListPattern,
}

/// The longest display name kept: a name is only shown to people, so a longer one is
/// cut rather than refused (imports carry all sorts of things in their name columns).
const MAX_NAME_CHARS: usize = 255;

fn clean_name(name: Option<&str>) -> Option<String> {
    let name: String = name?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.chars().take(MAX_NAME_CHARS).collect())
}

fn entry_from_row(row: &AnyRow, with_owner: bool) -> Result<ListEntry, DirectoryError> {
    let kind: String = row.try_get("kind")?;
    let pattern: String = row.try_get("pattern")?;
    Ok(ListEntry {
        owner: if with_owner {
            Some(row.try_get("owner")?)
        } else {
            None
        },
        kind: stored_kind(&kind)?,
        pattern: ListPattern::parse(&pattern)?,
        created_at: row.try_get("created_at")?,
    })
}

/// The schema's CHECK constraint keeps `kind` to these two; anything else means the row
/// was written by something other than pampa.
fn stored_kind(text: &str) -> Result<ListKind, DirectoryError> {
    text.parse()
        .map_err(|e: String| DirectoryError::Unavailable(sqlx::Error::Decode(e.into())))
}

/// `$from, $from+1, …` for `count` parameters.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_entry(owner: Option<&Address>, kind: ListKind, pattern: &ListPattern) -> String {
    match owner {
        Some(owner) => format!("{kind} entry {pattern} of {owner}"),
        None => format!("global {kind} entry {pattern}"),
    }
}

impl Directory {
    /// Parses `owner` and checks that such a user exists.
    async fn existing_user<'e, E>(
        &self,
        executor: E,
        owner: &str,
    ) -> Result<Address, DirectoryError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let address = Address::parse(owner)?;
        let found: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT address FROM users WHERE address = $1"))
                .bind(address.to_string())
                .fetch_optional(executor)
                .await?;
        match found {
            Some(_) => Ok(address),
            None => Err(DirectoryError::UnknownUser(address.to_string())),
        }
    }

    /// Adds an allow or block entry: for `owner` (an existing user), or global with `None`.
    /// The pattern is normalised; adding one that is there already is
    /// [`DirectoryError::Exists`].
    pub async fn add_list_entry(
        &self,
        owner: Option<&str>,
        kind: ListKind,
        pattern: &str,
    ) -> Result<ListEntry, DirectoryError> {
        let pattern = ListPattern::parse(pattern)?;
        let owner = match owner {
            Some(owner) => Some(self.existing_user(&self.pool, owner).await?),
            None => None,
        };
        let created_at = now_unix();
        let done = match &owner {
            Some(owner) => {
                sqlx::query(&self.sql(
                    "INSERT INTO user_list_entries (owner, pattern, kind, created_at) VALUES ($1, $2, $3, $4)",
                ))
                .bind(owner.to_string())
                .bind(pattern.to_string())
                .bind(kind.as_str())
                .bind(created_at)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(&self.sql(
                    "INSERT INTO global_list_entries (pattern, kind, created_at) VALUES ($1, $2, $3)",
                ))
                .bind(pattern.to_string())
                .bind(kind.as_str())
                .bind(created_at)
                .execute(&self.pool)
                .await
            }
        };
        match done {
            Err(e) if is_unique_violation(&e) => Err(DirectoryError::Exists(describe_entry(
                owner.as_ref(),
                kind,
                &pattern,
            ))),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(ListEntry {
                owner: owner.map(|o| o.to_string()),
                kind,
                pattern,
                created_at,
            }),
        }
    }

    /// Removes an allow or block entry (of `owner`, or global with `None`). Returns whether
    /// there was one; the pattern is normalised first, so `*.Example.net` removes
    /// `.example.net`.
    pub async fn remove_list_entry(
        &self,
        owner: Option<&str>,
        kind: ListKind,
        pattern: &str,
    ) -> Result<bool, DirectoryError> {
        let pattern = ListPattern::parse(pattern)?;
        let done = match owner {
            Some(owner) => {
                let owner = self.existing_user(&self.pool, owner).await?;
                sqlx::query(&self.sql(
                    "DELETE FROM user_list_entries WHERE owner = $1 AND pattern = $2 AND kind = $3",
                ))
                .bind(owner.to_string())
                .bind(pattern.to_string())
                .bind(kind.as_str())
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    &self.sql("DELETE FROM global_list_entries WHERE pattern = $1 AND kind = $2"),
                )
                .bind(pattern.to_string())
                .bind(kind.as_str())
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }

    /// The entries that apply to `owner`: the user's own, then the global ones (each
    /// entry's `owner` tells which). With `None`, only the global entries. `kind` narrows
    /// to one list. Sorted by kind, then pattern.
    pub async fn list_entries(
        &self,
        owner: Option<&str>,
        kind: Option<ListKind>,
    ) -> Result<Vec<ListEntry>, DirectoryError> {
        let filter = if kind.is_some() { " AND kind = $2" } else { "" };
        let mut entries = Vec::new();
        if let Some(owner) = owner {
            let owner = self.existing_user(&self.pool, owner).await?;
            let sql = format!(
                "SELECT owner, pattern, kind, created_at FROM user_list_entries \
                 WHERE owner = $1{filter} ORDER BY kind, pattern"
            );
            let sql = self.sql(&sql);
            let mut query = sqlx::query(&sql).bind(owner.to_string());
            if let Some(kind) = kind {
                query = query.bind(kind.as_str());
            }
            for row in &query.fetch_all(&self.pool).await? {
                entries.push(entry_from_row(row, true)?);
            }
        }
        let sql =
            format!(
            "SELECT pattern, kind, created_at FROM global_list_entries{} ORDER BY kind, pattern",
            if kind.is_some() { " WHERE kind = $1" } else { "" }
        );
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql);
        if let Some(kind) = kind {
            query = query.bind(kind.as_str());
        }
        for row in &query.fetch_all(&self.pool).await? {
            entries.push(entry_from_row(row, false)?);
        }
        Ok(entries)
    }

    /// Adds an address to `owner`'s address book. An address already there is
    /// [`DirectoryError::Exists`].
    pub async fn address_book_add(
        &self,
        owner: &str,
        address: &str,
        name: Option<&str>,
    ) -> Result<Contact, DirectoryError> {
        let address = Address::parse(address)?;
        let owner = self.existing_user(&self.pool, owner).await?;
        let name = clean_name(name);
        let done = sqlx::query(&self.sql(
            "INSERT INTO address_book (owner, address, name, created_at) VALUES ($1, $2, $3, $4)",
        ))
        .bind(owner.to_string())
        .bind(address.to_string())
        .bind(name.clone())
        .bind(now_unix())
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if is_unique_violation(&e) => Err(DirectoryError::Exists(format!(
                "{address} in the address book of {owner}"
            ))),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(Contact {
                address: address.to_string(),
                name,
            }),
        }
    }

    /// Removes an address from `owner`'s address book; returns whether it was there.
    pub async fn address_book_remove(
        &self,
        owner: &str,
        address: &str,
    ) -> Result<bool, DirectoryError> {
        let address = Address::parse(address)?;
        let owner = self.existing_user(&self.pool, owner).await?;
        let done =
            sqlx::query(&self.sql("DELETE FROM address_book WHERE owner = $1 AND address = $2"))
                .bind(owner.to_string())
                .bind(address.to_string())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds many addresses to `owner`'s address book in one transaction: all of them or,
    /// on an error, none. Every address must be valid (the first bad one is
    /// [`DirectoryError::InvalidAddress`]); addresses already in the book, or repeated in
    /// `contacts`, are skipped and counted.
    pub async fn address_book_import(
        &self,
        owner: &str,
        contacts: &[Contact],
    ) -> Result<ImportReport, DirectoryError> {
        let mut parsed = Vec::with_capacity(contacts.len());
        for contact in contacts {
            parsed.push((
                Address::parse(&contact.address)?,
                clean_name(contact.name.as_deref()),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let owner = self.existing_user(&mut *tx, owner).await?;
        let present: Vec<String> =
            sqlx::query_scalar(&self.sql("SELECT address FROM address_book WHERE owner = $1"))
                .bind(owner.to_string())
                .fetch_all(&mut *tx)
                .await?;
        let mut seen: std::collections::HashSet<String> = present.into_iter().collect();
        let mut report = ImportReport::default();
        let insert = self.sql(
            "INSERT INTO address_book (owner, address, name, created_at) VALUES ($1, $2, $3, $4)",
        );
        let created_at = now_unix();
        for (address, name) in parsed {
            let address = address.to_string();
            if !seen.insert(address.clone()) {
                report.skipped += 1;
                continue;
            }
            sqlx::query(&insert)
                .bind(owner.to_string())
                .bind(address)
                .bind(name)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
            report.added += 1;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// `owner`'s address book, sorted by address.
    pub async fn address_book_list(&self, owner: &str) -> Result<Vec<Contact>, DirectoryError> {
        let owner = self.existing_user(&self.pool, owner).await?;
        let rows = sqlx::query(
            &self.sql("SELECT address, name FROM address_book WHERE owner = $1 ORDER BY address"),
        )
        .bind(owner.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut contacts = Vec::with_capacity(rows.len());
        for row in &rows {
            contacts.push(Contact {
                address: row.try_get("address")?,
                name: row.try_get("name")?,
            });
        }
        Ok(contacts)
    }

    /// Everything the `whitelist` stage needs about mail from `senders` to `recipient`, in
    /// one query: the recipient's own and the global entries whose pattern matches one of
    /// the senders, and the senders that are in the recipient's address book.
    ///
    /// The recipient need not be a user (then only global entries can match): the stage
    /// must not fail a message because a user was removed after it arrived.
    pub async fn sender_lists(
        &self,
        recipient: &str,
        senders: &[Address],
    ) -> Result<Vec<ListMatch>, DirectoryError> {
        if senders.is_empty() {
            return Ok(Vec::new());
        }
        let recipient = recipient.trim().to_ascii_lowercase();
        let mut candidates: Vec<String> =
            senders.iter().flat_map(ListPattern::candidates).collect();
        candidates.sort();
        candidates.dedup();
        let mut book: Vec<String> = senders.iter().map(Address::to_string).collect();
        book.sort();
        book.dedup();

        // MySQL takes positional `?`, so every use of a value is a parameter of its own,
        // numbered in binding order.
        let n = candidates.len();
        let user_at = 2;
        let global_at = user_at + n;
        let owner_at = global_at + n;
        let book_at = owner_at + 1;
        let sql = format!(
            "SELECT 'user' AS scope, kind, pattern FROM user_list_entries \
             WHERE owner = $1 AND pattern IN ({}) \
             UNION ALL \
             SELECT 'global' AS scope, kind, pattern FROM global_list_entries \
             WHERE pattern IN ({}) \
             UNION ALL \
             SELECT 'book' AS scope, 'allow' AS kind, address AS pattern FROM address_book \
             WHERE owner = ${owner_at} AND address IN ({})",
            placeholders(user_at, n),
            placeholders(global_at, n),
            placeholders(book_at, book.len()),
        );
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql).bind(recipient.clone());
        for candidate in candidates.iter().chain(&candidates) {
            query = query.bind(candidate.clone());
        }
        query = query.bind(recipient);
        for address in &book {
            query = query.bind(address.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;

        let mut matches = Vec::with_capacity(rows.len());
        for row in &rows {
            let scope: String = row.try_get("scope")?;
            let kind: String = row.try_get("kind")?;
            let pattern: String = row.try_get("pattern")?;
            let scope = match scope.as_str() {
                "user" => ListScope::User,
                "global" => ListScope::Global,
                _ => ListScope::AddressBook,
            };
            matches.push(ListMatch {
                scope,
                kind: stored_kind(&kind)?,
                pattern: ListPattern::parse(&pattern)?,
            });
        }
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    #[test]
    fn patterns_normalise() {
        let cases = [
            ("Bob@Example.NET", "bob@example.net", "address"),
            ("Example.NET", "example.net", "domain"),
            ("example.net.", "example.net", "domain"),
            (".Example.net", ".example.net", "domain and subdomains"),
            ("*.example.net", ".example.net", "domain and subdomains"),
            ("*@example.net", "example.net", "domain"),
            ("@example.net", "example.net", "domain"),
            ("*@*.example.net", ".example.net", "domain and subdomains"),
            (" .net ", ".net", "domain and subdomains"),
        ];
        for (given, stored, what) in cases {
            let p = ListPattern::parse(given).unwrap();
            assert_eq!(p.to_string(), stored, "{given}");
            assert_eq!(p.describe(), what, "{given}");
            assert_eq!(ListPattern::parse(&p.to_string()).unwrap(), p);
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "",
            "*",
            "*.",
            "..example.net",
            "*..example.net",
            "exa mple.net",
            "-x.net",
        ] {
            match ListPattern::parse(bad) {
                Err(DirectoryError::InvalidDomain(text)) => assert_eq!(text, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for bad in ["bob@", "@", "a b@example.net", "bob@exa mple.net"] {
            match ListPattern::parse(bad) {
                Err(DirectoryError::InvalidAddress(text) | DirectoryError::InvalidDomain(text)) => {
                    assert_eq!(text, bad)
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn matching() {
        let exact = ListPattern::parse("bob@example.net").unwrap();
        let domain = ListPattern::parse("example.net").unwrap();
        let subs = ListPattern::parse(".example.net").unwrap();
        let bob = addr("BOB@Example.net");
        let deep = addr("bob@mail.example.net");
        let lookalike = addr("bob@badexample.net");
        assert!(exact.matches(&bob) && domain.matches(&bob) && subs.matches(&bob));
        assert!(!exact.matches(&deep) && !domain.matches(&deep) && subs.matches(&deep));
        assert!(!domain.matches(&lookalike) && !subs.matches(&lookalike));
        assert!(!exact.matches(&addr("alice@example.net")));
    }

    #[test]
    fn candidates_are_exactly_the_patterns_that_match() {
        let a = addr("bob@mail.example.net");
        assert_eq!(
            ListPattern::candidates(&a),
            [
                "bob@mail.example.net",
                "mail.example.net",
                ".mail.example.net",
                ".example.net",
                ".net"
            ]
        );
        for candidate in ListPattern::candidates(&a) {
            assert!(
                ListPattern::parse(&candidate).unwrap().matches(&a),
                "{candidate}"
            );
        }
    }
}
