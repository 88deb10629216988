//! Metric names of the RADIUS server (DESIGN.md §6). Labels are bounded: `kind` is
//! `access` or `accounting`, `nas` is a NAS's registered network (from the operator's
//! own table, never a packet's source address), and `reason` comes from a fixed list.

/// Counter: requests answered or decided, by `kind` and `result` (`accept`, `reject`
/// for access; `recorded`, `duplicate`, `ignored` for accounting).
pub const REQUESTS_TOTAL: &str = "pampa_radius_requests_total";
/// Histogram: seconds from receiving a request to sending its reply, by `kind`.
pub const REQUEST_DURATION_SECONDS: &str = "pampa_radius_request_duration_seconds";
/// Counter: packets dropped without a reply, by `kind` and `reason` (`malformed_*`,
/// `unexpected_code`, `unknown_nas`, `missing_message_authenticator`,
/// `bad_message_authenticator`, `bad_authenticator`, `directory_error`,
/// `publish_failed`, `in_progress`, `overloaded`).
pub const DROPPED_TOTAL: &str = "pampa_radius_dropped_total";
/// Counter: retransmissions answered from the reply cache (access) or recognised by the
/// event id (accounting), by `kind`.
pub const DUPLICATES_TOTAL: &str = "pampa_radius_duplicates_total";
/// Counter: requests per NAS, by `nas` (its registered network) and `kind`.
pub const NAS_REQUESTS_TOTAL: &str = "pampa_radius_nas_requests_total";
/// Counter: Accounting-Requests left unanswered because the event log did not confirm
/// the event; the NAS retransmits them.
pub const ACCT_UNACKNOWLEDGED_TOTAL: &str = "pampa_radius_acct_unacknowledged_total";
/// Counter: `access.auth` audit events lost, by `reason` (`queue_full`, `publish_failed`).
pub const AUDIT_LOST_TOTAL: &str = "pampa_radius_audit_lost_total";
/// Counter: PAP checks by `result` (`hit`: answered from the password cache, `miss`:
/// argon2 ran).
pub const PASSWORD_CACHE_TOTAL: &str = "pampa_radius_password_cache_total";
/// Gauge: sessions open in the projection.
pub const ACTIVE_SESSIONS: &str = "pampa_radius_active_sessions";

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use ::metrics::{counter, histogram, Counter, Histogram};

/// The hot path's metric handles, registered once. `counter!` with labels looks its
/// series up in the recorder's registry (hashing name and labels) on every call, which
/// at tens of thousands of requests a second is a measurable share of a cached PAP
/// request; a handle is an atomic add.
pub(crate) struct Handles {
    pub(crate) access_duration: Histogram,
    pub(crate) accounting_duration: Histogram,
    pub(crate) access_accept: Counter,
    pub(crate) access_reject: Counter,
    pub(crate) accounting_recorded: Counter,
    pub(crate) accounting_duplicate: Counter,
    /// `duplicates_total{kind="accounting"}`.
    pub(crate) accounting_duplicates: Counter,
    pub(crate) password_cache_hit: Counter,
    pub(crate) password_cache_miss: Counter,
    /// `nas_requests_total` by (registered network, kind): bounded by the operator's NAS
    /// table, never by packet sources.
    per_nas: Mutex<HashMap<String, [Counter; 2]>>,
}

impl Handles {
    /// Registers the handles with the recorder installed now (the binary installs its
    /// recorder before it builds the server).
    pub(crate) fn register() -> Self {
        let duration = |kind: &'static str| histogram!(REQUEST_DURATION_SECONDS, "kind" => kind);
        Handles {
            access_duration: duration("access"),
            accounting_duration: duration("accounting"),
            access_accept: counter!(REQUESTS_TOTAL, "kind" => "access", "result" => "accept"),
            access_reject: counter!(REQUESTS_TOTAL, "kind" => "access", "result" => "reject"),
            accounting_recorded: counter!(REQUESTS_TOTAL, "kind" => "accounting", "result" => "recorded"),
            accounting_duplicate: counter!(REQUESTS_TOTAL, "kind" => "accounting", "result" => "duplicate"),
            accounting_duplicates: counter!(DUPLICATES_TOTAL, "kind" => "accounting"),
            password_cache_hit: counter!(PASSWORD_CACHE_TOTAL, "result" => "hit"),
            password_cache_miss: counter!(PASSWORD_CACHE_TOTAL, "result" => "miss"),
            per_nas: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from the NAS registered as `network`; `accounting` picks the
    /// port.
    pub(crate) fn nas_request(&self, network: &str, accounting: bool) {
        let mut per_nas = self.per_nas.lock().unwrap_or_else(PoisonError::into_inner);
        let counters = match per_nas.get(network) {
            Some(counters) => counters,
            None => {
                let of = |kind: &'static str| counter!(NAS_REQUESTS_TOTAL, "nas" => network.to_owned(), "kind" => kind);
                per_nas
                    .entry(network.to_owned())
                    .or_insert_with(|| [of("access"), of("accounting")])
            }
        };
        counters[usize::from(accounting)].increment(1);
    }
}
