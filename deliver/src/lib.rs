//! deliver: writes each recipient's copy of a message to that user's mailbox store, in the
//! folder its decision names (inbox, `.Spam`, `.Quarantine`; a discard writes nothing),
//! then publishes `mail.delivered`, which records every copy and every discard.
//!
//! Delivery is idempotent per (message, recipient, store): a copy's file name is derived
//! from the message id and the recipient, and on any try after the first the store is
//! checked for it before anything is written. A crash between the write and the ack
//! therefore never makes a second copy.
//!
//! # Layout
//! - [`maildir`]: the Maildir++ store (write to `tmp/`, fsync, link into `new/`, fsync).
//! - [`headers`]: the `X-Spam-*` headers on each copy, and removing forged ones.
//! - `handler`: the stage that reads `mail.received` and drives the stores.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

mod handler;
pub mod headers;
pub mod maildir;
pub mod metrics;

pub use handler::{Deliver, DELIVER_CONSUMER, RECOVER_CONSUMER};
