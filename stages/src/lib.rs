//! The filtering stages (`rbl`, `whitelist`, `antivirus`, `score`) will live here.
//!
//! Nothing is implemented yet: until they are, deliver reads `mail.received` directly.
//! The crate exists so the workspace has the layout of DESIGN.md §2 from the start.
//!
//! # Layout
//! Empty for now.
#![warn(missing_docs)]
