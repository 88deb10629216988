//! The `rbl` stage: DNS blocklists on the SMTP client's IP, and URI blocklists on the
//! links in the body.
//!
//! - An `ip` list is asked about the client IP, reversed (RFC 5782):
//!   `2.0.0.127.zen.example`, or 32 reversed nibbles for IPv6.
//! - A `uri` list is asked about the registrable domain of every link in the decoded
//!   text and HTML parts (`www.sub.example.co.uk` → `example.co.uk.dbl.example`), and
//!   about IP-literal links in reversed form; at most `max_uri_domains` of them.
//! - Each (list, return code) hit becomes one message tag with the configured weight
//!   for that code. Codes in `errors` (and outside 127.0.0.0/8) mean the list refused
//!   to answer: never a hit, only counted.
//! - A timeout, SERVFAIL or unreachable server means "unknown": no tag, a count in
//!   [`STAGE_ERRORS_TOTAL`], and the message moves on. A DNS outage must not hold mail
//!   back or dead-letter it; `score` simply sees fewer findings.
//! - Every list is probed at start and every `probe_interval` with its RFC 5782 test
//!   entries. A list that lists `127.0.0.1` lists the world (an expired zone behind a
//!   wildcard, or a list that punishes a resolver by listing everything); it is
//!   disabled, [`LIST_DISABLED`] goes to 1 and an error is logged, until a probe finds
//!   it sane again. Otherwise every message would get its tags.
//!
//! # Layout
//! - `mod.rs`: [`Rbl`], its errors, metrics and health probes.
//! - `config.rs`: [`RblConfig`] and [`ListConfig`].
//! - `resolve.rs`: the [`Resolve`] trait and [`DnsResolver`] on hickory-resolver.
//! - `names.rs`: reversed IPs and query names.
//! - `uri.rs`: links in the body, reduced to registrable domains.
//! - `tests.rs`: all of the above against a fake resolver.

mod config;
mod names;
mod resolve;
#[cfg(test)]
mod tests;
pub(crate) mod uri;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use hickory_resolver::{net::NetError, proto::rr::Name};
use pampa_schemas::{MailAnalysis, Tag};
use tokio::{sync::watch, task::JoinSet};

pub use config::{ListConfig, ListKind, RblConfig};
pub use names::reverse_ip;
pub use resolve::{Answer, DnsResolver, Resolve};

use crate::{metrics::STAGE_ERRORS_TOTAL, Body, Findings, Stage, StageError};
use config::normalize_zone;
use names::{parse_client_ip, Target};

/// Gauge: 1 while a list is disabled because its health probe found it listing the
/// world, 0 otherwise; label `list` (the configured zone).
pub const LIST_DISABLED: &str = "pampa_rbl_list_disabled";

/// Why the rbl stage could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RblError {
    /// The stage spawns its health probe, so it needs a tokio runtime.
    #[error("the rbl stage must be created inside a tokio runtime")]
    NoRuntime,
    /// A list's zone is not a usable DNS name.
    #[error("rbl list zone {zone:?} is invalid: {reason}")]
    BadZone {
        /// The configured zone.
        zone: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same zone is configured twice for the same kind.
    #[error("rbl list zone {zone:?} is configured twice")]
    DuplicateList {
        /// The zone.
        zone: String,
    },
    /// Another setting is out of range.
    #[error("rbl setting {setting} is invalid: {reason}")]
    BadSetting {
        /// The setting's name.
        setting: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `resolver` is not set and the system resolver configuration is unreadable.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemResolver(#[source] NetError),
    /// hickory-resolver refused the configuration.
    #[error("cannot build the dns resolver: {0}")]
    Resolver(#[source] NetError),
}

/// One configured list and its health.
struct List {
    zone: String,
    kind: ListKind,
    tag: String,
    weights: BTreeMap<Ipv4Addr, f64>,
    default_weight: f64,
    errors: Vec<Ipv4Addr>,
    /// Set by a probe that found the list listing 127.0.0.1.
    disabled: AtomicBool,
    /// Set by a probe that did not find the RFC 5782 test entry, so it warns once.
    test_entry_missing: AtomicBool,
}

impl List {
    /// A code that means "the list refuses to answer" rather than "listed".
    fn is_error_code(&self, code: Ipv4Addr) -> bool {
        self.errors.contains(&code) || code.octets()[0] != 127
    }

    fn weight(&self, code: Ipv4Addr) -> f64 {
        self.weights
            .get(&code)
            .copied()
            .unwrap_or(self.default_weight)
    }
}

struct Inner<R> {
    resolver: R,
    timeout: Duration,
    max_uri_domains: usize,
    lists: Vec<List>,
    /// Turns true once the first health probe of every list has finished.
    probed: watch::Sender<bool>,
}

/// The rbl stage. Dropping it stops its health probe.
pub struct Rbl<R: Resolve = DnsResolver> {
    inner: Arc<Inner<R>>,
    probe_task: tokio::task::AbortHandle,
}

impl Rbl {
    /// The stage with the real resolver. Must be called inside a tokio runtime: it
    /// spawns the health probe, which runs at once and then every `probe_interval`.
    pub fn new(config: RblConfig) -> Result<Rbl, RblError> {
        let resolver = if config.lists.is_empty() {
            DnsResolver::idle()?
        } else {
            DnsResolver::new(config.resolver, Duration::from_millis(config.timeout_ms))?
        };
        Rbl::with_resolver(config, resolver)
    }
}

impl<R: Resolve> std::fmt::Debug for Rbl<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists: Vec<(&str, ListKind, bool)> = self
            .inner
            .lists
            .iter()
            .map(|l| (l.zone.as_str(), l.kind, l.disabled.load(Ordering::Relaxed)))
            .collect();
        f.debug_struct("Rbl")
            .field("lists (zone, kind, disabled)", &lists)
            .finish()
    }
}

impl<R: Resolve> Rbl<R> {
    /// The stage with another resolver (tests use a fake). `config.resolver` is
    /// ignored. Must be called inside a tokio runtime.
    pub fn with_resolver(config: RblConfig, resolver: R) -> Result<Self, RblError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RblError::NoRuntime)?;
        if config.timeout_ms == 0 {
            return Err(bad_setting("timeout_ms", "it must be at least 1"));
        }
        if config.probe_interval.is_zero() {
            return Err(bad_setting("probe_interval", "it must be longer than zero"));
        }
        let mut lists: Vec<List> = Vec::with_capacity(config.lists.len());
        for list in &config.lists {
            let zone = normalize_zone(&list.zone);
            if let Err(reason) = check_zone(&zone) {
                return Err(RblError::BadZone {
                    zone: list.zone.clone(),
                    reason,
                });
            }
            if lists.iter().any(|l| l.zone == zone && l.kind == list.kind) {
                return Err(RblError::DuplicateList { zone });
            }
            if !list.default_weight.is_finite() || list.weights.values().any(|w| !w.is_finite()) {
                return Err(bad_setting(
                    &format!("weights of {zone}"),
                    "weights must be finite numbers",
                ));
            }
            let tag = list.tag_name();
            if tag.trim().is_empty() {
                return Err(bad_setting(
                    &format!("tag of {zone}"),
                    "it must not be empty",
                ));
            }
            metrics::gauge!(LIST_DISABLED, "list" => zone.clone()).set(0.0);
            lists.push(List {
                zone,
                kind: list.kind,
                tag,
                weights: list.weights.clone(),
                default_weight: list.default_weight,
                errors: list.errors.clone(),
                disabled: AtomicBool::new(false),
                test_entry_missing: AtomicBool::new(false),
            });
        }
        let inner = Arc::new(Inner {
            resolver,
            timeout: Duration::from_millis(config.timeout_ms),
            max_uri_domains: config.max_uri_domains,
            lists,
            probed: watch::Sender::new(false),
        });
        // The task holds only a weak reference, so dropping the stage ends it even if
        // the abort below never runs (a leaked handle).
        let probe_task = runtime
            .spawn(probe_loop(Arc::downgrade(&inner), config.probe_interval))
            .abort_handle();
        Ok(Rbl { inner, probe_task })
    }

    /// Probes every list now (the background probe does so every `probe_interval`).
    pub async fn probe(&self) {
        self.inner.probe_all().await;
    }

    /// Waits until the first health probe has finished (at most about `timeout_ms`
    /// after the stage was created).
    pub async fn probed(&self) {
        let mut probed = self.inner.probed.subscribe();
        let _ = probed.wait_for(|done| *done).await;
    }

    /// Whether the list for `zone` is disabled for listing the world; `None` if no
    /// list has that zone.
    pub fn is_disabled(&self, zone: &str) -> Option<bool> {
        let zone = normalize_zone(zone);
        let mut lists = self
            .inner
            .lists
            .iter()
            .filter(|l| l.zone == zone)
            .peekable();
        lists.peek()?;
        Some(lists.any(|l| l.disabled.load(Ordering::Relaxed)))
    }
}

impl<R: Resolve> Drop for Rbl<R> {
    fn drop(&mut self) {
        self.probe_task.abort();
    }
}

fn bad_setting(setting: &str, reason: &'static str) -> RblError {
    RblError::BadSetting {
        setting: setting.to_owned(),
        reason,
    }
}

fn check_zone(zone: &str) -> Result<(), String> {
    if zone.is_empty() {
        return Err("it is empty".to_owned());
    }
    if !zone
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("it may hold only letters, digits, '-', '_' and dots".to_owned());
    }
    Name::from_ascii(zone)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn count_error(kind: &'static str) {
    metrics::counter!(STAGE_ERRORS_TOTAL, "stage" => <Rbl as Stage>::NAME, "kind" => kind)
        .increment(1);
}

/// A lookup's outcome for one list and target.
struct Looked {
    list: usize,
    /// Where the target first appeared, so evidence reads in message order.
    order: usize,
    target: Target,
    answer: Answer,
}

impl<R: Resolve> Inner<R> {
    /// One lookup, never longer than the timeout, with failures counted.
    async fn lookup(&self, name: &str) -> Answer {
        let answer = tokio::time::timeout(self.timeout, self.resolver.lookup_a(name))
            .await
            .unwrap_or(Answer::Timeout);
        if let Some(kind) = answer.error_kind() {
            tracing::debug!(
                name,
                kind,
                "A blocklist lookup gave no answer; the item counts as unknown."
            );
            count_error(kind);
        }
        answer
    }

    fn spawn_lookups(
        self: &Arc<Self>,
        set: &mut JoinSet<Looked>,
        kind: ListKind,
        targets: &[Target],
    ) {
        for (index, list) in self.lists.iter().enumerate() {
            if list.kind != kind || list.disabled.load(Ordering::Relaxed) {
                continue;
            }
            for (order, target) in targets.iter().enumerate() {
                let inner = Arc::clone(self);
                let target = target.clone();
                let name = target.query_name(&list.zone);
                set.spawn(async move {
                    let answer = inner.lookup(&name).await;
                    Looked {
                        list: index,
                        order,
                        target,
                        answer,
                    }
                });
            }
        }
    }

    fn has_enabled(&self, kind: ListKind) -> bool {
        self.lists
            .iter()
            .any(|l| l.kind == kind && !l.disabled.load(Ordering::Relaxed))
    }

    async fn process(self: &Arc<Self>, analysis: &MailAnalysis, body: &Body) -> Findings {
        let mut set = JoinSet::new();
        if self.has_enabled(ListKind::Ip) {
            match parse_client_ip(&analysis.received.client.ip) {
                Some(ip) => self.spawn_lookups(&mut set, ListKind::Ip, &[Target::Ip(ip)]),
                None => tracing::debug!(
                    client_ip = %analysis.received.client.ip,
                    "The client IP is not an address, so no IP list is asked."
                ),
            }
        }
        if self.has_enabled(ListKind::Uri) {
            let targets = self.body_targets(body).await;
            self.spawn_lookups(&mut set, ListKind::Uri, &targets);
        }
        let mut looked = Vec::with_capacity(set.len());
        while let Some(result) = set.join_next().await {
            match result {
                Ok(one) => looked.push(one),
                Err(e) => tracing::error!(error = %e, "A blocklist lookup task failed."),
            }
        }
        // A list that the first probe (running since start) finds listing the world
        // must not tag the first messages either. The probe's lookups are bounded by the
        // same timeout and started earlier, so this wait adds little.
        let mut probed = self.probed.subscribe();
        let _ = tokio::time::timeout(self.timeout, probed.wait_for(|done| *done)).await;
        // Lookups finish in any order; report in config order, then in message order.
        looked.sort_by_key(|l| (l.list, l.order));
        self.findings(looked)
    }

    /// The body's link targets, found off the async threads: decoding a large message
    /// takes long enough to stall other messages' lookups.
    async fn body_targets(&self, body: &Body) -> Vec<Target> {
        let body = body.clone();
        let max = self.max_uri_domains;
        match tokio::task::spawn_blocking(move || uri::body_targets(body.raw(), max)).await {
            Ok(targets) => targets,
            Err(e) => {
                // A bug in the decoder, not in the message's standing: go on without
                // URI lookups rather than hold the message back.
                tracing::error!(error = %e, "Finding the links of a message failed; no URI list was asked.");
                count_error("uri_extraction");
                Vec::new()
            }
        }
    }

    /// One tag per (list, return code), naming every item that got that code.
    fn findings(&self, looked: Vec<Looked>) -> Findings {
        let mut hits: BTreeMap<(usize, Ipv4Addr), Vec<String>> = BTreeMap::new();
        for Looked {
            list: index,
            target,
            answer,
            ..
        } in looked
        {
            let list = &self.lists[index];
            let Answer::Listed(codes) = answer else {
                continue;
            };
            if list.disabled.load(Ordering::Relaxed) {
                continue;
            }
            for code in codes {
                if list.is_error_code(code) {
                    tracing::debug!(zone = %list.zone, %code, %target, "A list answered with an error code.");
                    count_error("list_error_code");
                    continue;
                }
                let items = hits.entry((index, code)).or_default();
                let item = target.to_string();
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        let tags = hits
            .into_iter()
            .map(|((index, code), items)| {
                let list = &self.lists[index];
                Tag {
                    name: list.tag.clone(),
                    evidence: format!("{code} from {} for {}", list.zone, items.join(", ")),
                    weight: Some(list.weight(code)),
                }
            })
            .collect();
        Findings {
            tags,
            ..Findings::default()
        }
    }

    async fn probe_all(self: &Arc<Self>) {
        let mut set = JoinSet::new();
        for index in 0..self.lists.len() {
            let inner = Arc::clone(self);
            set.spawn(async move { inner.probe_list(index).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// RFC 5782 §5: an IPv4 list must list 127.0.0.2 and must not list 127.0.0.1; a
    /// domain list must list `test` and must not list `invalid`. URI lists are also
    /// asked about 127.0.0.1, since they list IP-literal links too and a wildcard
    /// answers that as well.
    async fn probe_list(&self, index: usize) {
        let list = &self.lists[index];
        let listed = match list.kind {
            ListKind::Ip => "2.0.0.127",
            ListKind::Uri => "test",
        };
        let listed = format!("{listed}.{}", list.zone);
        let unlisted_ip = format!("1.0.0.127.{}", list.zone);
        let unlisted_name = format!("invalid.{}", list.zone);
        for name in [&listed, &unlisted_ip, &unlisted_name] {
            self.resolver.forget(name);
        }
        let (listed_answer, unlisted_ip_answer, unlisted_name_answer) =
            tokio::join!(self.lookup(&listed), self.lookup(&unlisted_ip), async {
                match list.kind {
                    ListKind::Uri => Some(self.lookup(&unlisted_name).await),
                    ListKind::Ip => None,
                }
            });
        let unlisted: Vec<&Answer> = std::iter::once(&unlisted_ip_answer)
            .chain(unlisted_name_answer.as_ref())
            .collect();
        // Any code counts here, even one outside 127/8: a parked domain's wildcard
        // lists the world as surely as a rogue list does. Configured error codes do not:
        // they say "refused", not "listed".
        let world = unlisted.iter().any(|answer| match answer {
            Answer::Listed(codes) => codes.iter().any(|code| !list.errors.contains(code)),
            _ => false,
        });
        let sane = !world
            && unlisted
                .iter()
                .any(|answer| matches!(answer, Answer::NotListed | Answer::Listed(_)));
        if world {
            metrics::gauge!(LIST_DISABLED, "list" => list.zone.clone()).set(1.0);
            if !list.disabled.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    zone = %list.zone,
                    probe = %unlisted_ip,
                    "A blocklist lists the RFC 5782 test entry that must never be listed, so it \
                     lists the world; it is disabled until a probe finds it sane. Check the \
                     zone, the list's terms of use, and the resolver."
                );
            }
        } else if sane {
            metrics::gauge!(LIST_DISABLED, "list" => list.zone.clone()).set(0.0);
            if list.disabled.swap(false, Ordering::Relaxed) {
                tracing::info!(zone = %list.zone, "A disabled blocklist no longer lists the world; it is enabled again.");
            }
        }
        // Neither world nor sane: every must-not probe went unanswered, which says
        // nothing about the list, so it stays as it was.
        match listed_answer {
            Answer::Listed(_) => list.test_entry_missing.store(false, Ordering::Relaxed),
            Answer::NotListed => {
                let first = !list.test_entry_missing.swap(true, Ordering::Relaxed);
                if first {
                    tracing::warn!(
                        zone = %list.zone,
                        probe = %listed,
                        "A blocklist does not list its RFC 5782 test entry: it may be empty, \
                         misnamed, or refusing this resolver."
                    );
                }
            }
            _ => {}
        }
    }
}

/// Probes at once, then every `interval`, for as long as the stage lives.
async fn probe_loop<R: Resolve>(inner: Weak<Inner<R>>, interval: Duration) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            inner.probe_all().await;
            inner.probed.send_replace(true);
        }
        tokio::time::sleep(interval).await;
    }
}

impl<R: Resolve> Stage for Rbl<R> {
    const NAME: &'static str = "rbl";
    const NEEDS_BODY: bool = true;

    async fn process(&self, analysis: &MailAnalysis, body: &Body) -> Result<Findings, StageError> {
        // Never an error: what cannot be looked up is unknown, not a reason to retry.
        Ok(self.inner.process(analysis, body).await)
    }
}
