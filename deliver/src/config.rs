//! The `[deliver]` section of the configuration.

use std::time::Duration;

use serde::Deserialize;

/// How an LMTP server learns the folder of a Spam or Quarantine copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderDelivery {
    /// `RCPT TO:<user+Spam@domain>`: Dovecot saves it into that mailbox with
    /// `lmtp_save_to_detail_mailbox = yes`; Cyrus with `lmtp_fuzzy_mailbox_match`
    /// or a `+Spam` mailbox.
    Detail,
    /// A header (`folder_header`) on the copy, which the server's Sieve script reads
    /// (`if header :is "X-Pampa-Folder" "Spam" { fileinto "Spam"; }`).
    Header,
}

/// What deliver does and how patient it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverConfig {
    /// Messages written at once by one deliver process.
    pub concurrency: usize,
    /// Tries of one message before it goes to dead letters. High by default: a store
    /// that is down (an LMTP server being restarted, a full mailbox) is waited for,
    /// with backoff up to five minutes between tries, for about a week.
    pub max_deliver: u32,
    /// How long a full mailbox is waited for before its copy fails for good (a
    /// `mail.delivered` with outcome `failed`; never a silent drop).
    #[serde(with = "humantime_serde")]
    pub quota_grace: Duration,
    /// How an LMTP server learns a copy's folder.
    pub folder_delivery: FolderDelivery,
    /// The header of `folder_delivery = "header"`.
    pub folder_header: String,
    /// Most connections open at once to one LMTP server.
    pub lmtp_max_connections: usize,
    /// Each LMTP reply (and connecting) must come within this long.
    #[serde(with = "humantime_serde")]
    pub lmtp_timeout: Duration,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig {
            concurrency: 16,
            max_deliver: 2000,
            quota_grace: Duration::from_secs(3 * 24 * 3600),
            folder_delivery: FolderDelivery::Detail,
            folder_header: "X-Pampa-Folder".to_owned(),
            lmtp_max_connections: 8,
            lmtp_timeout: Duration::from_secs(120),
        }
    }
}
