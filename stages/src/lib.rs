//! The filtering stages: stateless consumers that each add findings to a message.
//!
//! Enrichers (`rbl`, `whitelist`, `antivirus`) only add tags with evidence; `score` turns
//! the tags into a score and a per-recipient decision with the pure
//! [`pampa_schemas::decide`]. Each stage is a [`Stage`]; [`StageHandler`] adapts it to the
//! bus's runner, which owns acks, retries and dead letters.
//!
//! # Layout
//! - [`stage`]: the [`Stage`] trait, [`Findings`], and the handler that runs any stage.
//! - [`pipeline`]: the `[pipeline]` order and the subject each stage reads and writes.
//! - [`rbl`]: DNSBL on the client IP, URI blocklists on body links.
//! - [`auth`]: SPF, DKIM and DMARC results as tags (mail-auth).
//! - [`whitelist`]: allow and block lists, and the address book.
//! - [`antivirus`]: clamd over INSTREAM.
//! - [`rules`]: the SpamAssassin-compatible rule engine: `.cf` loading and message checks.
//! - [`score`]: tag weights, the message score and each recipient's decision.
//! - [`classifier`]: the naive Bayes spam classifier behind `BAYES_*` and `pampa train`.
//! - [`metrics`]: metric names shared by the stages.
#![warn(missing_docs)]

pub mod antivirus;
pub mod auth;
pub mod classifier;
pub mod metrics;
pub mod mime;
pub mod pipeline;
pub mod rbl;
pub mod rules;
pub mod score;
pub mod stage;
pub mod whitelist;

pub use pipeline::{OutboundConfig, PipelineConfig, StageName};
pub use stage::{Body, Findings, Stage, StageError, StageHandler, Verdict};
