//! Metric names of the SMTP MX (DESIGN.md §6).

/// Counter: SMTP sessions by `result` (`quit`, `disconnect`, `timeout`, `error_limit`,
/// `command_limit`, `dictionary_attack`, `blocked`, `io_error`; and, for connections turned
/// away before a session, `refused_busy`, `refused_per_ip` and `refused_rate`).
pub const SESSIONS_TOTAL: &str = "pampa_smtp_sessions_total";
/// Counter: messages by `result` (`accepted`, `rejected`, `tempfail`).
pub const MESSAGES_TOTAL: &str = "pampa_smtp_messages_total";
/// Counter: replies sent, by `code` (`250`, `550`, …).
pub const REPLIES_TOTAL: &str = "pampa_smtp_replies_total";
/// Counter: client IPs refused for probing unknown recipients.
pub const DICTIONARY_BLOCKS_TOTAL: &str = "pampa_smtp_dictionary_attack_blocks_total";
/// Histogram: bytes of accepted messages.
pub const MESSAGE_BYTES: &str = "pampa_smtp_message_bytes";
/// Gauge: sessions open now.
pub const ACTIVE_SESSIONS: &str = "pampa_smtp_active_sessions";
