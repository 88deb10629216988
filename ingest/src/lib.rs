//! ingest: pampa's SMTP MX.
//!
//! It accepts mail only for local domains and known users, stores the body in the blob
//! store, publishes `mail.received`, and answers 250 only once both are durable. When the
//! event log cannot confirm, it answers `451 4.3.0` and the sender retries, so nothing
//! accepted is ever lost.
//!
//! # Layout
//! - [`config`]: the `[smtp]` section.
//! - [`conn`]: the SMTP plumbing shared with the submission role: command lines, reply
//!   queue, DATA reader, STARTTLS.
//! - [`server`]: the listener, TLS set-up and the shared state of all sessions.
//! - `session`: one SMTP conversation, a state machine over smtp-proto's parser.
//! - [`guard`]: failure guards; the MX's dictionary-attack defence (unknown recipients
//!   per client IP), and submission's AUTH lockouts.
//! - [`message`]: the `Received:` header and what ingest reads from the header block.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

pub mod config;
pub mod conn;
pub mod guard;
pub mod message;
pub mod metrics;
mod rate;
pub mod server;
mod session;

pub use config::SmtpConfig;
pub use server::{Ingest, IngestError};
