//! The DNS role: authoritative zones, local DNSBL mirror zones, recursion for subscribers,
//! and every query as a `dns.query` event.
//!
//! # Layout
//! - [`dnsbl`]: rbldnsd's `ip4set` and `dnset` datasets, held compactly and answered
//!   per RFC 5782.
#![warn(missing_docs)]

pub mod dnsbl;
