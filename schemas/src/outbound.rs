//! Payloads of outbound mail: the submission role's limits, the held messages of
//! flagged senders, and the relay's attempts and final results.
//!
//! The flow: `mail.submitted` (a [`crate::MailReceived`] with `submitted_by`) → the
//! outbound checks (`mail.outbound_antivirus`, …) → `mail.outbound` (the scored
//! analysis) → `mail.held`, or the relay's `mail.relay.attempt` per try and
//! `mail.relay.final` per recipient.

use serde::{Deserialize, Serialize};

use crate::Event;

/// `mail.submission_limited`: a user or a client IP reached a sending limit and was
/// answered `451 4.7.1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionLimited {
    /// The authenticated user.
    pub user: String,
    /// The client IP, as text.
    pub ip: String,
    /// Which limit: `messages_per_hour`, `recipients_per_hour`, `ip_messages_per_hour`.
    pub limit: String,
    /// The limit's value, per hour.
    pub allowed_per_hour: u32,
}

impl Event for SubmissionLimited {
    const EVENT_TYPE: &'static str = "mail.submission_limited";
    const SCHEMA_VERSION: u16 = 1;
}

/// `mail.held`: outbound mail the checks judged spam or infected was not sent, and its
/// sender was flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailHeld {
    /// pampa's id of the message.
    pub message_id: String,
    /// The authenticated user who sent it.
    pub submitted_by: String,
    /// The message score.
    pub score: Option<f64>,
    /// The decision's reason (`score 9.1 >= cut 5.0 of outbound`, `virus …`).
    pub reason: String,
    /// The recipients it would have gone to.
    pub recipients: Vec<String>,
    /// Whether this message set the sender's flag (false: it was set already).
    pub flagged_now: bool,
}

impl Event for MailHeld {
    const EVENT_TYPE: &'static str = "mail.held";
    const SCHEMA_VERSION: u16 = 1;
}

/// How one recipient fared in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// The remote MX answered 2xx.
    Delivered,
    /// A 4xx, or no MX could be reached: tried again later.
    Deferred,
    /// A 5xx: refused for good.
    Bounced,
}

impl AttemptResult {
    /// Lower-case name, for tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Deferred => "deferred",
            AttemptResult::Bounced => "bounced",
        }
    }
}

/// One recipient's result in an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientAttempt {
    /// The recipient.
    pub recipient: String,
    /// What happened.
    pub result: AttemptResult,
    /// The remote reply, or the connection error, in words.
    pub reply: String,
}

/// `mail.relay.attempt`: the relay tried to deliver to one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAttempt {
    /// pampa's id of the message.
    pub message_id: String,
    /// The destination domain.
    pub domain: String,
    /// The MX host that answered last, if any did.
    pub mx: Option<String>,
    /// Whether the session ran inside TLS.
    pub tls: bool,
    /// Which attempt this was for these recipients (1 is the first).
    pub attempt: u32,
    /// Each recipient's result.
    pub recipients: Vec<RecipientAttempt>,
}

impl Event for RelayAttempt {
    const EVENT_TYPE: &'static str = "mail.relay.attempt";
    const SCHEMA_VERSION: u16 = 1;
}

/// How a recipient left the relay's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayOutcome {
    /// Accepted by the remote MX.
    Delivered,
    /// Refused for good (5xx).
    Bounced,
    /// Still failing when the queue lifetime ran out.
    Expired,
    /// Dropped by an operator.
    Dropped,
}

impl RelayOutcome {
    /// Lower-case name, for tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayOutcome::Delivered => "delivered",
            RelayOutcome::Bounced => "bounced",
            RelayOutcome::Expired => "expired",
            RelayOutcome::Dropped => "dropped",
        }
    }
}

/// `mail.relay.final`: a recipient left the relay's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayFinal {
    /// pampa's id of the message.
    pub message_id: String,
    /// The recipient.
    pub recipient: String,
    /// How it ended.
    pub outcome: RelayOutcome,
    /// The last remote reply or error.
    pub reply: String,
    /// Attempts made.
    pub attempts: u32,
    /// Whether a DSN went to the sender (never to a null or unverified sender).
    pub dsn_sent: bool,
}

impl Event for RelayFinal {
    const EVENT_TYPE: &'static str = "mail.relay.final";
    const SCHEMA_VERSION: u16 = 1;
}
