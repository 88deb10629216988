//! The contracts between pampa's roles: the event envelope, the payload of every event,
//! the subjects they travel on, and the codec that turns them into bytes.
//!
//! This crate is pure types and does no I/O, so every role, the replay tools and the
//! fuzzers can share it without pulling in a network stack.
//!
//! # Layout
//! - [`envelope`]: the [`Envelope`] every event travels in, and deterministic ids.
//! - [`access`]: the payloads of the access network (`access.auth`, `access.acct`).
//! - [`dns`]: the payload of the DNS query log (`dns.query`, batches of queries).
//! - [`analysis`]: tags, spam levels, dispositions and the pure `decide` function.
//! - [`mail`]: the payloads of the mail pipeline (`mail.received`, and `mail.submitted`
//!   with the same payload; `mail.delivered`, `mail.feedback`).
//! - [`outbound`]: the payloads of outbound mail (`mail.submission_limited`,
//!   `mail.held`, `mail.relay.attempt`, `mail.relay.final`).
//! - [`subjects`]: subject names and the NATS header names tools route by.
//! - [`column`]: dictionary-encoded columns of batch events.
//! - [`codec`]: rmp-serde named encoding, decoding, and the header-only view.
#![warn(missing_docs)]

pub mod access;
pub mod analysis;
pub mod codec;
pub mod column;
pub mod dns;
pub mod envelope;
pub mod mail;
pub mod outbound;
pub mod subjects;

pub use access::{decode_auths, AccessAcct, AccessAuth, AccessAuths, AcctStatus, AuthResult};
pub use analysis::{
    decide, decode_analysis, disposition, Decision, Disposition, LevelSnapshot, MailAnalysis,
    RecipientAnalysis, Tag, ANALYSIS_EVENT_TYPES, OUTBOUND_ANTIVIRUS_EVENT_TYPE,
    OUTBOUND_EVENT_TYPE, RECOVERED_EVENT_TYPE,
};
pub use codec::{decode, decode_head, decode_view, encode, CodecError, EnvelopeHead};
pub use column::Dictionary;
pub use dns::{decode_queries, DnsQueries, DnsQuery, DnsTransport, ZoneKind};
pub use envelope::{derive_id, new_id, Envelope, Event};
pub use mail::{
    BlobRef, ClientInfo, DeliveryOutcome, MailDelivered, MailFeedback, MailReceived,
    RecipientDelivery, RecipientLevel, Verdict, SUBMITTED_EVENT_TYPE,
};
pub use outbound::{
    AttemptResult, MailHeld, RecipientAttempt, RelayAttempt, RelayFinal, RelayOutcome,
    SubmissionLimited,
};
