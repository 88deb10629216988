//! The `whitelist` stage: tags each recipient whose allow list, block list or address
//! book names the sender.
//!
//! - The sender is looked at twice: the envelope sender (`MAIL FROM`) and the address(es)
//!   of the `From:` header. Either one matching an entry is enough, because users put on
//!   their lists what they see (the `From:`), and operators what servers send (the
//!   envelope). The null sender `<>` (bounces) never matches.
//! - Each recipient gets recipient tags ([`WL_USER`], [`WL_GLOBAL`], [`WL_ADDRESS_BOOK`],
//!   [`BL_USER`], [`BL_GLOBAL`]), at most one of each, whose evidence names every
//!   matched pattern and which sender field matched it. The stage only finds; `score`
//!   decides (a block beats an allow).
//! - Lookups are cached for `cache_ttl`, so a burst of mail costs one query, and a change
//!   made with the CLI takes effect within seconds.
//! - A directory failure is [`StageError::Transient`]: the runner retries later, and no
//!   mail passes with its lists unread.
//!
//! # Layout
//! - `mod.rs`: [`Whitelist`], [`ListSource`], sender extraction and tagging.
//! - `config.rs`: [`WhitelistConfig`].
//! - `tests.rs`: matching against a real SQLite directory, the cache, and failures.

mod config;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use pampa_directory::{Address, Directory, DirectoryError, ListKind, ListMatch, ListScope};
use pampa_schemas::{
    analysis::{BL_GLOBAL, BL_USER, WL_ADDRESS_BOOK, WL_GLOBAL, WL_USER},
    MailAnalysis, Tag,
};

pub use config::WhitelistConfig;

use crate::{metrics::STAGE_ERRORS_TOTAL, Body, Findings, Stage, StageError};

/// Where the stage reads the lists: the [`Directory`], or a fake in tests.
pub trait ListSource: Send + Sync + 'static {
    /// The entries of `recipient` and the global ones whose pattern matches one of
    /// `senders`, and those senders that are in the recipient's address book (see
    /// [`Directory::sender_lists`]).
    fn sender_lists(
        &self,
        recipient: &str,
        senders: &[Address],
    ) -> impl Future<Output = Result<Vec<ListMatch>, DirectoryError>> + Send;
}

impl ListSource for Directory {
    fn sender_lists(
        &self,
        recipient: &str,
        senders: &[Address],
    ) -> impl Future<Output = Result<Vec<ListMatch>, DirectoryError>> + Send {
        Directory::sender_lists(self, recipient, senders)
    }
}

/// Which part of the message named a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    /// `MAIL FROM`.
    Envelope,
    /// The `From:` header.
    FromHeader,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Envelope => "envelope sender",
            Field::FromHeader => "From header",
        })
    }
}

/// One sender address and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sender {
    field: Field,
    address: Address,
}

/// A `From:` may list several mailboxes; only this many are looked up, so a crafted
/// header cannot make one message cost an unbounded query.
const MAX_FROM_ADDRESSES: usize = 8;

/// Past this many cached lookups the cache is swept, and emptied if sweeping expired
/// entries is not enough: memory stays bounded whatever the traffic.
const MAX_CACHE_ENTRIES: usize = 10_000;

/// The cache key: a recipient and the (sorted, distinct) sender addresses asked about.
type CacheKey = (String, Vec<String>);

/// Cached lookups with the time each was made.
type Cache = HashMap<CacheKey, (Instant, Arc<Vec<ListMatch>>)>;

/// The `whitelist` stage. `S` is where the lists come from: the [`Directory`] in
/// production.
pub struct Whitelist<S = Directory> {
    config: WhitelistConfig,
    source: S,
    cache: Mutex<Cache>,
}

impl Whitelist {
    /// The stage over the directory's lists.
    pub fn new(config: WhitelistConfig, directory: Directory) -> Whitelist {
        Whitelist::with_source(config, directory)
    }
}

impl<S: ListSource> Whitelist<S> {
    /// The stage over any [`ListSource`] (tests use fakes).
    pub fn with_source(config: WhitelistConfig, source: S) -> Whitelist<S> {
        Whitelist {
            config,
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WhitelistConfig {
        &self.config
    }

    /// The matches for mail from `senders` to `recipient`, from the cache while fresh.
    async fn lookup(
        &self,
        recipient: &str,
        senders: &[Address],
    ) -> Result<Arc<Vec<ListMatch>>, StageError> {
        let ttl = self.config.cache_ttl;
        let mut addresses: Vec<String> = senders.iter().map(Address::to_string).collect();
        addresses.sort();
        addresses.dedup();
        let key = (recipient.to_owned(), addresses);
        if !ttl.is_zero() {
            if let Some(hit) = self.cached(&key, ttl) {
                return Ok(hit);
            }
        }
        let matches = match self.source.sender_lists(recipient, senders).await {
            Ok(matches) => Arc::new(matches),
            Err(error) => {
                ::metrics::counter!(STAGE_ERRORS_TOTAL, "stage" => Self::NAME, "kind" => "database")
                    .increment(1);
                tracing::debug!(recipient, error = %error, "The lists could not be read.");
                // Every failure here is the database's (the addresses were parsed
                // already), and the database may come back: retry rather than pass the
                // mail on with its lists unread.
                return Err(StageError::Transient(Box::new(error)));
            }
        };
        if !ttl.is_zero() {
            self.remember(key, matches.clone(), ttl);
        }
        Ok(matches)
    }

    fn cached(&self, key: &CacheKey, ttl: Duration) -> Option<Arc<Vec<ListMatch>>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (each entry is inserted whole), so a poisoned lock is still usable.
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, matches)| matches.clone())
    }

    fn remember(&self, key: CacheKey, matches: Arc<Vec<ListMatch>>, ttl: Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), matches));
    }
}

impl<S: ListSource> Stage for Whitelist<S> {
    const NAME: &'static str = "whitelist";
    // The `From:` header is in the body blob.
    const NEEDS_BODY: bool = true;

    async fn process(&self, analysis: &MailAnalysis, body: &Body) -> Result<Findings, StageError> {
        let senders = senders(&analysis.received.mail_from, body.raw());
        let mut findings = Findings::default();
        if senders.is_empty() {
            return Ok(findings);
        }
        let addresses: Vec<Address> = senders.iter().map(|s| s.address.clone()).collect();
        // One recipient after the other: each is one indexed query, usually answered
        // from the cache, and a message rarely has many recipients.
        for recipient in &analysis.recipients {
            let matches = self.lookup(&recipient.address, &addresses).await?;
            for tag in tags_for(&senders, &matches) {
                tracing::debug!(recipient = %recipient.address, tag = %tag.name, evidence = %tag.evidence, "A list names the sender.");
                findings
                    .recipient_tags
                    .push((recipient.address.clone(), tag));
            }
        }
        Ok(findings)
    }
}

/// The senders to look up: the envelope sender (unless it is the null sender) and the
/// `From:` header's addresses. Addresses that do not parse are left out: they cannot be
/// on any list, since lists only hold valid patterns.
fn senders(mail_from: &str, raw: &[u8]) -> Vec<Sender> {
    let mut out = Vec::new();
    if !mail_from.is_empty() {
        match Address::parse(mail_from) {
            Ok(address) => out.push(Sender {
                field: Field::Envelope,
                address,
            }),
            Err(_) => tracing::debug!(mail_from, "The envelope sender is not a plain address."),
        }
    }
    for address in from_header(raw) {
        let sender = Sender {
            field: Field::FromHeader,
            address,
        };
        if !out.contains(&sender) {
            out.push(sender);
        }
    }
    out
}

/// The addresses of the `From:` header, parsed with mail-parser (RFC 5322 address lists,
/// groups, comments and encoded words are its business, not ours).
fn from_header(raw: &[u8]) -> Vec<Address> {
    let Some(message) = mail_parser::MessageParser::new().parse_headers(raw) else {
        return Vec::new();
    };
    let Some(from) = message.from() else {
        return Vec::new();
    };
    from.iter()
        .filter_map(|addr| addr.address())
        .filter_map(|text| Address::parse(text).ok())
        .take(MAX_FROM_ADDRESSES)
        .collect()
}

/// The tag a match gives.
fn tag_name(scope: ListScope, kind: ListKind) -> &'static str {
    match (scope, kind) {
        (ListScope::User, ListKind::Allow) => WL_USER,
        (ListScope::Global, ListKind::Allow) => WL_GLOBAL,
        (ListScope::AddressBook, _) => WL_ADDRESS_BOOK,
        (ListScope::User, ListKind::Block) => BL_USER,
        (ListScope::Global, ListKind::Block) => BL_GLOBAL,
    }
}

/// The order tags are emitted in: blocks first, as `score` weighs them first.
const TAG_ORDER: [&str; 5] = [BL_USER, BL_GLOBAL, WL_USER, WL_GLOBAL, WL_ADDRESS_BOOK];

/// One tag per tag name, whose evidence lists each matched pattern and the senders that
/// matched it, such as `.example.net matched by envelope sender bob@mail.example.net`.
/// Sorted, so the same lists give the same evidence on every backend.
fn tags_for(senders: &[Sender], matches: &[ListMatch]) -> Vec<Tag> {
    let mut evidence: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for found in matches {
        let by: Vec<String> = senders
            .iter()
            .filter(|s| found.pattern.matches(&s.address))
            .map(|s| format!("{} {}", s.field, s.address))
            .collect();
        if by.is_empty() {
            continue;
        }
        evidence
            .entry(tag_name(found.scope, found.kind))
            .or_default()
            .insert(format!("{} matched by {}", found.pattern, by.join(" and ")));
    }
    TAG_ORDER
        .iter()
        .filter_map(|name| {
            let pieces = evidence.get(name)?;
            Some(Tag::new(
                *name,
                pieces.iter().cloned().collect::<Vec<_>>().join("; "),
            ))
        })
        .collect()
}
