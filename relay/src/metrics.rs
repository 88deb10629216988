//! Metric names of the relay (DESIGN.md §6).

/// Counter: recipients per attempt, by `result` (`delivered`, `deferred`, `bounced`).
pub const ATTEMPTS_TOTAL: &str = "pampa_relay_attempts_total";
/// Counter: recipients leaving the queue, by `outcome` (`delivered`, `bounced`,
/// `expired`, `dropped`).
pub const FINAL_TOTAL: &str = "pampa_relay_final_total";
/// Counter: DSNs queued to senders.
pub const DSN_TOTAL: &str = "pampa_relay_dsn_total";
/// Counter: outbound messages held because the checks judged them spam or infected.
pub const HELD_TOTAL: &str = "pampa_relay_held_total";
/// Counter: senders newly flagged.
pub const FLAGGED_TOTAL: &str = "pampa_relay_senders_flagged_total";
/// Histogram: seconds of one SMTP attempt, connection to QUIT.
pub const ATTEMPT_SECONDS: &str = "pampa_relay_attempt_duration_seconds";
/// Gauge: attempts in flight.
pub const IN_FLIGHT: &str = "pampa_relay_attempts_in_flight";
/// Counter: attempts whose session ran inside TLS, by `tls` (`yes`, `no`).
pub const SESSIONS_TOTAL: &str = "pampa_relay_sessions_total";
/// Gauge: recipients in the relay queue, by `state` (`queued`: all waiting;
/// `deferred`: those that failed at least once).
pub const QUEUE_RECIPIENTS: &str = "pampa_relay_queue_recipients";
