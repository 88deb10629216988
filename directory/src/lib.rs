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
//! - `password`: argon2 hashing.
#![warn(missing_docs)]

pub mod address;
mod error;
mod password;
mod store;

pub use address::Address;
pub use error::DirectoryError;
pub use store::{Backend, Directory, SpamLevel, User};
