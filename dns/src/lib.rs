//! The DNS role (authoritative zones, DNSBL mirrors, recursion) will live here.
//!
//! Nothing is implemented yet; the crate exists so the workspace has the layout of
//! DESIGN.md §2 from the start.
//!
//! # Layout
//! Empty for now.
#![warn(missing_docs)]
