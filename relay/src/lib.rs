//! relay: delivers outbound mail to the internet.
//!
//! It reads `mail.outbound` (submitted mail after the outbound checks). Mail the checks
//! judged spam or infected is held (`mail.held`) and its sender flagged; the rest goes
//! into the relay's queue, one row per recipient. The queue runner attempts what is
//! due: MX lookup, SMTP with opportunistic STARTTLS, a DKIM signature, and an event for
//! every attempt. A 4xx or a connection failure retries with exponential backoff; a
//! 5xx or expiry bounces with a DSN (RFC 3464) to the sender, whom submission verified.
//!
//! # Layout
//! - [`config`]: the `[relay]` section.
//! - [`outbound`]: the consumer of `mail.outbound`: hold and flag, or queue.
//! - [`queue`]: the queue runner, and the operator's drop.
//! - [`mx`]: MX and address lookups.
//! - [`client`]: the SMTP client of one attempt.
//! - [`dkim`]: key generation, the DNS TXT record, and signing.
//! - [`dsn`]: delivery status notifications (RFC 3464).
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod dkim;
pub mod dsn;
pub mod metrics;
pub mod mx;
pub mod outbound;
pub mod queue;

pub use config::RelayConfig;
pub use queue::{drop_message, Relay, RelayError};
