//! The directory: who pampa serves. Domains, users with their password hash, mailbox
//! location and spam level, in SQL.
//!
//! One code path serves SQLite (the default), MariaDB/MySQL and PostgreSQL through sqlx's
//! `Any` driver; each backend has its own migrations, because their DDL differs.
//!
//! # Layout
//! - [`error`]: [`DirectoryError`].
//! - [`address`]: parsing and normalising mail addresses.
//! - `store`: [`Directory`], the connection, migrations and queries.
//! - [`lists`]: allow and block lists (per user and global), the address book, and the
//!   one lookup the `whitelist` stage makes per recipient.
//! - `password`: argon2 hashing.
#![warn(missing_docs)]

pub mod address;
mod error;
pub mod lists;
mod password;
mod store;

pub use address::Address;
pub use error::DirectoryError;
pub use lists::{Contact, ImportReport, ListEntry, ListKind, ListMatch, ListPattern, ListScope};
pub use store::{Backend, Directory, SpamLevel, User};
