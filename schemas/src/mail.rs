//! Payloads of the mail pipeline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Event;

/// A claim check: where the raw RFC 5322 bytes of a message are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Key in the blob store (the object store bucket or the data directory).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes, checked on read.
    pub sha256: String,
}

/// What ingest knew about the SMTP client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The connecting IP address, as text.
    pub ip: String,
    /// What the client said in EHLO or HELO.
    pub helo: String,
    /// Whether the session ran inside TLS.
    pub tls: bool,
}

/// `mail.received`: ingest accepted a message and stored its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailReceived {
    /// pampa's id for the message; also the correlation id of its whole history.
    pub message_id: String,
    /// The SMTP client.
    pub client: ClientInfo,
    /// The envelope sender; empty for the null reverse-path `<>`.
    pub mail_from: String,
    /// The accepted recipients, as verified addresses.
    pub recipients: Vec<String>,
    /// The body, with pampa's `Received:` header on top.
    pub blob: BlobRef,
    /// The `Message-ID:` header, if the message had one.
    #[serde(default)]
    pub header_message_id: Option<String>,
    /// The host name ingest announced.
    pub received_by: String,
    /// When the final dot of DATA arrived.
    pub received_at: DateTime<Utc>,
    /// Each recipient's spam level as it was at RCPT time, so replay needs no lookups.
    #[serde(default)]
    pub levels: Vec<RecipientLevel>,
    /// On mail from the submission role (`mail.submitted`): the authenticated user who
    /// sent it. `None` on mail from the MX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// A recipient's spam level when the message arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientLevel {
    /// The recipient.
    pub address: String,
    /// The level.
    pub level: crate::analysis::LevelSnapshot,
}

impl Event for MailReceived {
    const EVENT_TYPE: &'static str = "mail.received";
    const SCHEMA_VERSION: u16 = 1;

    fn is_event_type(event_type: &str) -> bool {
        event_type == Self::EVENT_TYPE || event_type == SUBMITTED_EVENT_TYPE
    }
}

/// `mail.submitted`: the submission role accepted a message from an authenticated user.
/// Its payload is a [`MailReceived`] with `submitted_by` set, so the outbound stages
/// read it as ingest's.
pub const SUBMITTED_EVENT_TYPE: &str = "mail.submitted";

/// How one recipient's copy fared in one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Written now.
    Delivered,
    /// Found already written by an earlier attempt; nothing was written twice.
    AlreadyDelivered,
    /// Not written, on purpose: the disposition was to discard it. The log keeps the
    /// message until retention ends.
    Discarded {
        /// The decision's reason.
        reason: String,
    },
    /// The store refused it for good.
    Failed {
        /// Why, in words.
        reason: String,
    },
    /// The store said "later" (a 4xx, over quota, unreachable): this attempt's record;
    /// the copy is tried again, and a later `mail.delivered` has its end.
    Deferred {
        /// Why, in words.
        reason: String,
    },
}

/// One recipient's copy in one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientDelivery {
    /// The recipient address.
    pub recipient: String,
    /// The store, as the directory names it (`maildir:` …).
    pub store: String,
    /// The folder: `INBOX`, `Spam` or `Quarantine`.
    pub folder: String,
    /// Where the copy is (a file path for Maildir).
    pub location: String,
    /// What happened.
    pub outcome: DeliveryOutcome,
}

/// `mail.delivered`: deliver wrote each recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailDelivered {
    /// pampa's id of the message.
    pub message_id: String,
    /// One entry per recipient and store.
    pub deliveries: Vec<RecipientDelivery>,
}

impl Event for MailDelivered {
    const EVENT_TYPE: &'static str = "mail.delivered";
    const SCHEMA_VERSION: u16 = 1;
}

/// What a user said about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Unwanted: it should not have reached the inbox.
    Spam,
    /// Wanted: it should not have gone to Spam or been dropped.
    Ham,
}

impl Verdict {
    /// `spam` or `ham`, as the CLI and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Spam => "spam",
            Verdict::Ham => "ham",
        }
    }
}

/// `mail.feedback`: a recipient judged a message. Replay takes these as labels, and the
/// classifier trains on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFeedback {
    /// pampa's id of the message.
    pub message_id: String,
    /// The recipient who judged it.
    pub user: String,
    /// What they said.
    pub verdict: Verdict,
    /// Where the verdict came from: `cli` (`pampa feedback`), `imap` (a move into or out
    /// of Spam) …
    pub origin: String,
}

impl Event for MailFeedback {
    const EVENT_TYPE: &'static str = "mail.feedback";
    const SCHEMA_VERSION: u16 = 1;
}
