//! The crate's error type.

use pampa_bus::BusError;

/// What can stop the RADIUS server from starting or reading the log. Per-packet
/// problems never surface here: they drop the packet and count it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RadiusError {
    /// A listen address could not be bound.
    #[error("cannot bind radius socket {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The event log failed while replaying `access.acct`.
    #[error("cannot replay accounting events: {0}")]
    Replay(#[from] BusError),
    /// A stored event could not be decoded.
    #[error("undecodable access.acct event {id}: {source}")]
    Event {
        /// The event id.
        id: String,
        /// Why.
        source: pampa_schemas::CodecError,
    },
}

impl RadiusError {
    /// Whether retrying later may work (the log was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, RadiusError::Replay(e) if e.is_transient())
    }
}
