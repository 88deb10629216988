//! Metric names of the submission role (DESIGN.md §6).

/// Counter: sessions by `result` (`quit`, `disconnect`, `timeout`, `error_limit`,
/// `command_limit`, `io_error`, `tls_error`, `auth_locked_out`, `refused_busy`,
/// `refused_per_ip`).
pub const SESSIONS_TOTAL: &str = "pampa_submission_sessions_total";
/// Counter: replies sent, by `code`.
pub const REPLIES_TOTAL: &str = "pampa_submission_replies_total";
/// Counter: AUTH attempts by `result` (`ok`, `failed`, `locked_out`, `no_tls`).
pub const AUTH_TOTAL: &str = "pampa_submission_auth_total";
/// Counter: lockouts started, by `scope` (`ip`, `user`).
pub const LOCKOUTS_TOTAL: &str = "pampa_submission_auth_lockouts_total";
/// Counter: messages by `result` (`accepted`, `rejected`, `tempfail`).
pub const MESSAGES_TOTAL: &str = "pampa_submission_messages_total";
/// Counter: forged senders refused, by `where` (`envelope`, `header`).
pub const FORGED_TOTAL: &str = "pampa_submission_forged_sender_total";
/// Counter: rate limits reached, by `limit` (`messages_per_hour`, `recipients_per_hour`,
/// `ip_messages_per_hour`).
pub const LIMITED_TOTAL: &str = "pampa_submission_rate_limited_total";
/// Gauge: sessions open now.
pub const ACTIVE_SESSIONS: &str = "pampa_submission_active_sessions";
