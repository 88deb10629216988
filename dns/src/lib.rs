//! The DNS role: authoritative zones, local DNSBL mirror zones, recursion for subscribers,
//! and every query as a `dns.query` event.
//!
//! - **Authoritative zones** (`[[dns.zones]]`) from RFC 1035 master files, with AA,
//!   NXDOMAIN vs NODATA (the SOA in the authority section), CNAME chasing inside the
//!   zone, wildcards, delegations with glue, and reloads that swap the whole zone set at
//!   once so no query sees half of it.
//! - **DNSBL zones** (`[[dns.dnsbl]]`): rbldnsd datasets answered per RFC 5782,
//!   reloaded when the file changes.
//! - **Recursion** for `recursion_allowed` networks only, by forwarding to `forwarders`
//!   or, with none, full recursion from the roots; with a cache in front. Everyone else
//!   gets REFUSED for names outside pampa's zones, so pampa is no open resolver.
//! - **UDP and TCP** on one address; EDNS(0); UDP answers truncated with TC to the
//!   client's size; a per-network response-rate limit on UDP; malformed queries get
//!   FORMERR (or are dropped when not even the header is there), unknown opcodes NOTIMP.
//! - **Query log**: each query becomes a `dns.query` event through a bounded queue, so
//!   logging never slows answers; overflow is dropped and counted.
//!
//! # Layout
//! - [`config`]: the `[dns]` section ([`DnsConfig`]).
//! - [`server`]: [`Dns`]: `new`, `bind`, `serve`; [`DnsHandle`] with `reload`; the UDP
//!   workers, the TCP connections and the answer path.
//! - [`zone`]: authoritative zones: loading and lookup.
//! - `blzone`: a [`dnsbl::Dataset`] served as a zone.
//! - `fastpath`: DNSBL answers read and written on the wire bytes, without hickory's
//!   `Message`, for the common queries.
//! - [`dnsbl`]: rbldnsd's `ip4set` and `dnset` datasets, held compactly.
//! - `upstream`: forwarding and full recursion (hickory-resolver).
//! - `cache`: the recursion cache in front of upstream.
//! - `rrl`: response-rate limiting.
//! - `udpbatch`: `recvmmsg`/`sendmmsg` batches for the UDP workers (Linux).
//! - `querylog`: the bounded queue and batching publisher of `dns.query`.
//! - [`metrics`]: metric names.
#![warn(missing_docs)]

mod blzone;
mod cache;
pub mod config;
pub mod dnsbl;
mod error;
mod fastpath;
pub mod metrics;
mod querylog;
mod rrl;
pub mod server;
#[cfg(target_os = "linux")]
mod udpbatch;
mod upstream;
pub mod zone;

pub use config::{DnsConfig, DnsblConfig, DnsblFormat, RateLimitConfig, ZoneConfig};
pub use error::DnsError;
pub use querylog::SOURCE;
pub use server::{Dns, DnsHandle, DnsSockets, ReloadOutcome, ReloadReport, ZoneStatus};
pub use zone::Zone;
