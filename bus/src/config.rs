//! The `[bus]` section of the configuration.

use std::time::Duration;

use serde::Deserialize;

/// Where the event log lives and how long it keeps events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `embedded` (SQLite under `data_dir`) or a NATS URL such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long events and bodies are kept, so they can be replayed (`30d`, `12h`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// JetStream replicas of each stream and bucket: 1 on one node, 3 in a cluster.
    pub replicas: usize,
    /// Tries of one input before it goes to `dead.<stage>`.
    pub max_deliver: u32,
    /// How long a stage may hold an input before it is handed out again.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How long a publish may wait for its ack before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// First backoff after a transient failure; it doubles on each try.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "embedded".to_owned(),
            max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_secs(1),
        }
    }
}
