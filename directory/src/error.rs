/// What went wrong in the directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The database URL names no supported backend.
    #[error("unsupported database url {0:?}: use sqlite://, mysql:// or postgres://")]
    UnsupportedUrl(String),
    /// The database cannot be reached or failed; retrying may work.
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Migrating the schema failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An address is not a valid `local@domain`.
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    /// A domain name is not valid.
    #[error("invalid domain {0:?}")]
    InvalidDomain(String),
    /// The domain is not one of ours.
    #[error("domain {0} is not a local domain; add it first with `pampa domain add {0}`")]
    UnknownDomain(String),
    /// No such user.
    #[error("user {0} does not exist")]
    UnknownUser(String),
    /// No such spam level.
    #[error("spam level {0:?} does not exist (known: {1})")]
    UnknownLevel(String, String),
    /// The thing to add is there already.
    #[error("{0} already exists")]
    Exists(String),
    /// The domain still has users.
    #[error("domain {0} still has {1} user(s); remove them first")]
    DomainInUse(String, i64),
    /// A NAS network is neither an IP address nor a CIDR, or has host bits set.
    #[error("invalid network {network:?}: {reason}")]
    InvalidNetwork {
        /// The text as given.
        network: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A shared or CHAP secret is refused. The message says why and how long it is, but
    /// never repeats the secret.
    #[error("invalid {what}: {reason}")]
    InvalidSecret {
        /// Which secret (`shared secret`, `CHAP secret`).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A RADIUS setting is out of range or malformed.
    #[error("invalid {setting} {value:?}: {reason}")]
    InvalidRadiusSetting {
        /// Which setting (`session timeout`, `framed IP`, …).
        setting: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No NAS client is registered as this network.
    #[error("no NAS client is registered as {0} (see `pampa nas list`)")]
    UnknownNas(String),
    /// A stored value no longer parses (the table was edited by hand); retrying will not
    /// help.
    #[error("stored {what} is invalid: {reason}")]
    Corrupt {
        /// Which value, and whose.
        what: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl DirectoryError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, DirectoryError::Unavailable(_))
    }
}
