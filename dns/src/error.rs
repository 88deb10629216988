//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong setting up or reloading the DNS role. Query handling has no error
/// type: every bad query is answered with an rcode (or dropped) and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configuration value is invalid.
    #[error("invalid dns configuration: {0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A zone file could not be read.
    #[error("cannot read zone file {}: {source}", path.display())]
    ZoneRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A zone file is not a valid zone. `line` is where parsing failed, when known.
    #[error("zone {zone}: {}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Zone {
        /// The zone's configured name.
        zone: String,
        /// The file.
        path: PathBuf,
        /// The 1-based line the error is on, when the parser could place it.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A DNSBL dataset could not be loaded.
    #[error("dnsbl zone {zone}: {}: {message}", path.display())]
    Dnsbl {
        /// The zone's configured name.
        zone: String,
        /// The dataset file.
        path: PathBuf,
        /// What is wrong (the dataset loader's error, which names the line).
        message: String,
    },
    /// The upstream resolver could not be set up.
    #[error("cannot set up recursion: {0}")]
    Upstream(String),
    /// The server has stopped, so there is nothing to reload.
    #[error("the dns server has stopped")]
    Stopped,
}
