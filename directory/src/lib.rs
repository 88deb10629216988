//! The directory: who pampa serves. Domains, users with their password hash, mailbox
//! location and spam level, in SQL.
//!
//! One code path serves SQLite (the default), MariaDB/MySQL and PostgreSQL through sqlx's
//! `Any` driver; each backend has its own migrations, because their DDL differs.
//!
//! # Layout
//! - `error`: [`DirectoryError`].
//! - [`address`]: parsing and normalising mail addresses.
//! - `store`: [`Directory`], the connection, migrations and queries.
//! - [`lists`]: allow and block lists (per user and global), the address book, and the
//!   one lookup the `whitelist` stage makes per recipient.
//! - [`marks`]: deliver's marks per (message, recipient, store).
//! - [`outbound`]: sender aliases, outbound limits and flags, DKIM keys, and the relay's
//!   queue.
//! - [`radius`]: NAS clients and users' RADIUS profiles (CHAP secret, reply attributes,
//!   limits), as the RADIUS server looks them up.
//! - `password`: argon2 hashing, and [`verify_password_hash`] for callers that hold the
//!   stored hash already.
#![warn(missing_docs)]

pub mod address;
mod error;
pub mod lists;
pub mod marks;
pub mod outbound;
mod password;
pub mod radius;
mod store;

pub use address::Address;
pub use error::DirectoryError;
pub use lists::{Contact, ImportReport, ListEntry, ListKind, ListMatch, ListPattern, ListScope};
pub use marks::{DeliveryMark, MarkState};
pub use outbound::{DkimKey, OutboundProfile, QueueEntry, QueueStatus, SenderFlag};
pub use password::verify as verify_password_hash;
pub use radius::{NasClient, RadiusProfile, RadiusUser};
pub use store::{Backend, Directory, SpamLevel, User};
