//! deliver: writes each recipient's copy of a message to that user's mailbox stores
//! (Maildir, LMTP into Dovecot or Cyrus, or both during a migration), in the folder its
//! decision names (inbox, Spam, Quarantine; a discard writes nothing), then publishes
//! `mail.delivered`, which records every copy in every store and every discard.
//!
//! Delivery is idempotent per (message, recipient, store):
//! - Maildir: a copy's file name is derived from the message id and the recipient, and
//!   on any try after the first the store is checked for it before anything is written.
//! - LMTP: a mark in SQL (`delivery_marks`) says what each server has. The mark is
//!   written `sending` before the transaction and `delivered` right after the reply, so
//!   the only window is a crash between the server's reply and that write (one SQL
//!   statement); the retry then sends the copy again with the same
//!   `X-Pampa-Delivery-Id` header, which a Sieve `duplicate` rule drops
//!   (ops/README.md). A crash before the reply sends nothing twice that was not lost.
//!
//! # Layout
//! - [`config`]: the `[deliver]` section.
//! - [`location`]: a user's stores, from the directory's `mailbox_location`.
//! - [`maildir`]: the Maildir++ store (write to `tmp/`, fsync, link into `new/`, fsync).
//! - [`quota`]: Maildir++ quota (`maildirsize`).
//! - [`lmtp`]: the LMTP client and its per-server connection pools.
//! - [`headers`]: the `X-Spam-*` headers on each copy, and removing forged ones.
//! - `handler`: the stage that reads `mail.received` and drives the stores.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

pub mod config;
mod handler;
pub mod headers;
pub mod lmtp;
pub mod location;
pub mod maildir;
pub mod metrics;
pub mod quota;

pub use config::{DeliverConfig, FolderDelivery};
pub use handler::{Deliver, DELIVERY_ID_HEADER, DELIVER_CONSUMER, RECOVER_CONSUMER};
