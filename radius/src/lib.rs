//! The RADIUS role: authentication and accounting for the ISP's NAS fleet, with
//! accounting streamed into the event log as `access.acct`.
//!
//! - **Authentication** (`radius.auth_listen`): PAP against the directory's argon2
//!   hashes (run off the async workers, successes cached), CHAP and MS-CHAPv2 (RFC 2759)
//!   for users with a cleartext `chap_secret`. Message-Authenticator (RFC 3579) is
//!   required by default (BlastRADIUS, CVE-2024-3596) and always sent in replies.
//!   Retransmissions are answered from a reply cache (RFC 5080). Simultaneous-Use is
//!   checked against the live sessions projection. Every decision is audited as
//!   `access.auth`, published off the request path.
//! - **Accounting** (`radius.acct_listen`): each record becomes `access.acct` with an id
//!   derived from the record's content, so a retransmission is stored once, and the
//!   Accounting-Response is sent only after the log says the event is durable.
//! - Bad input never crashes: a malformed packet, an unknown NAS or a bad authenticator
//!   is dropped and counted in `pampa_radius_dropped_total{reason}`.
//!
//! # Layout
//! - [`config`]: the `[radius]` section ([`RadiusConfig`]).
//! - [`server`]: [`Radius`]: `new`, `bind`, `serve`; the UDP loops, the request handlers,
//!   the audit publisher and the projection's replay and follow loop.
//! - `auth`: deciding an Access-Request (PAP, CHAP, MS-CHAPv2, Simultaneous-Use) and
//!   building its reply.
//! - [`acct`]: Accounting-Request → [`pampa_schemas::AccessAcct`], and the dedup key.
//! - [`sessions`]: the pure projections [`Sessions`] (open sessions) and [`Usage`]
//!   (a user's month), shared with the `pampa sessions` and `pampa usage` commands.
//! - [`packet`]: the strict packet codec and attribute numbers (fuzzed in its tests).
//! - [`crypto`]: User-Password hiding, authenticators, Message-Authenticator, CHAP.
//! - [`mschap`]: MS-CHAPv2, checked against RFC 2759's test vectors.
//! - `cache`: the reply cache and the PAP password cache.
//! - [`directory`]: the [`RadiusDirectory`] trait the server asks about NASes and users.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

pub mod acct;
mod acct_writer;
mod auth;
mod cache;
pub mod config;
pub mod crypto;
pub mod directory;
mod error;
pub mod metrics;
pub mod mschap;
pub mod packet;
pub mod server;
pub mod sessions;

pub use config::RadiusConfig;
pub use directory::{LookupError, NasClient, RadiusDirectory, RadiusProfile, RadiusUser};
pub use error::RadiusError;
pub use packet::{Code, DecodeError, EncodeError, Packet, PacketWriter};
pub use server::{acct_events, Radius, RadiusHandle, RadiusSockets};
pub use sessions::{normalize_user, Session, Sessions, Usage, UsageBuilder};
