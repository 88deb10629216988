//! submission: authenticated SMTP for the ISP's own users (RFC 6409), on 587 with
//! STARTTLS and 465 with implicit TLS. It is a separate role and process from the MX:
//! the MX never relays, and submission never accepts without AUTH.
//!
//! A message is accepted only from an authenticated user, only inside TLS, only from
//! the user's own addresses (envelope and `From:`), and within the user's and the IP's
//! hourly limits. It is stored and published as `mail.submitted`; the outbound checks
//! and the relay take it from there.
//!
//! # Layout
//! - [`config`]: the `[submission]` section.
//! - [`server`]: the two listeners and what sessions share.
//! - `session`: one conversation, on the MX's SMTP plumbing.
//! - `sasl`: the PLAIN and LOGIN mechanisms.
//! - `limits`: sending rates per user and per IP (governor).
//! - `message`: the `From:` check and the headers submission adds.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

pub mod config;
mod limits;
mod message;
pub mod metrics;
mod sasl;
pub mod server;
mod session;

pub use config::SubmissionConfig;
pub use server::{Submission, SubmissionError};
