//! Metric names of deliver (DESIGN.md §6).

/// Counter: recipient copies by `store` (`maildir`, `lmtp`; `none` for a recipient
/// whose user or location is gone), `folder` and `outcome`
/// (`delivered`, `already_delivered`, `discarded`, `failed`, `deferred`); `folder` is
/// `none` for a discard.
pub const COPIES_TOTAL: &str = "pampa_deliver_copies_total";
/// Histogram: seconds of one LMTP transaction, connection (if new) to the last reply.
pub const LMTP_SECONDS: &str = "pampa_deliver_lmtp_duration_seconds";
/// Counter: copies deferred to a later try, by `store`.
pub const RETRIES_TOTAL: &str = "pampa_deliver_retries_total";
/// Counter: copies refused for a full mailbox, by `store` and `result` (`deferred`
/// within the grace period, `failed` after it or when the server said so for good).
pub const OVER_QUOTA_TOTAL: &str = "pampa_deliver_over_quota_total";
