//! The `[stages.whitelist]` section.

use std::time::Duration;

use serde::Deserialize;

/// The `[stages.whitelist]` section.
///
/// ```toml
/// [stages.whitelist]
/// cache_ttl = "5s"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhitelistConfig {
    /// How long one recipient's lookup for one set of senders is reused before the
    /// directory is asked again. A burst of mail from one sender to one user then costs
    /// one query, and a change made with `pampa list` or `pampa addressbook` takes
    /// effect within this time. `"0s"` asks the directory for every message.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for WhitelistConfig {
    fn default() -> Self {
        WhitelistConfig {
            cache_ttl: Duration::from_secs(5),
        }
    }
}
