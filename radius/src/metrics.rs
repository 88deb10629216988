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
