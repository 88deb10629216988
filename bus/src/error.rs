use pampa_schemas::CodecError;

/// What went wrong in the event log. [`BusError::is_transient`] says whether to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The configuration names something this crate cannot use.
    #[error("bad bus configuration: {0}")]
    Config(String),
    /// The log cannot be reached or did not confirm in time; retrying may work.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The local store failed.
    #[error("embedded log storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// Reading or writing a body failed.
    #[error("blob store failed: {0}")]
    Io(#[from] std::io::Error),
    /// A body is gone, for instance because retention removed it.
    #[error("blob {0} not found")]
    BlobMissing(String),
    /// A body does not match its claim check.
    #[error("blob {key} is corrupt: expected {expected}, found {found}")]
    BlobCorrupt {
        /// The blob key.
        key: String,
        /// What the claim check or the store's metadata says (`sha256 …`, `N bytes`).
        expected: String,
        /// What the stored bytes are.
        found: String,
    },
    /// An event could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl BusError {
    /// Whether the same call may succeed later (an outage, a timeout, a busy store).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BusError::Unavailable(_) | BusError::Storage(_) | BusError::Io(_)
        )
    }
}
