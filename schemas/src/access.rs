//! Payloads of the access network: RADIUS authentication decisions and accounting.
//!
//! Since schema version 2 an `access.auth` event carries a batch of decisions
//! ([`AccessAuths`]), as `dns.query` carries a batch of queries: an authentication is a
//! few microseconds of work, and an event with its own id, envelope, headers and log
//! row per decision cost more than the decision (a fifth of the server's CPU at full
//! rate). Accounting stays one event per record: each is acknowledged to its NAS on its
//! own and feeds the session projection.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{codec::decode_batch, CodecError, Envelope, Event};

/// How an Access-Request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthResult {
    /// Access-Accept was sent.
    Accept,
    /// Access-Reject was sent.
    Reject,
}

/// `access.auth`: one Access-Request and its decision. Never holds a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessAuth {
    /// The User-Name as sent.
    pub user: String,
    /// The directory user it resolved to (`alice@example.org`), if any.
    #[serde(default)]
    pub address: Option<String>,
    /// The NAS's source address.
    pub nas_ip: String,
    /// NAS-Identifier, if sent.
    #[serde(default)]
    pub nas_identifier: Option<String>,
    /// NAS-Port, if sent.
    #[serde(default)]
    pub nas_port: Option<u32>,
    /// Calling-Station-Id (the caller's number or MAC), if sent.
    #[serde(default)]
    pub calling_station_id: Option<String>,
    /// `pap`, `chap`, `mschapv2`, or `none` when no credentials were present.
    pub method: String,
    /// The decision.
    pub result: AuthResult,
    /// Why, in words (`bad password`, `unknown user`, `simultaneous-use limit 1 reached`).
    pub reason: String,
    /// When the request was decided. Absent in schema version 1, whose one decision per
    /// event took the envelope's `occurred_at`.
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// `access.auth` (schema version 2): the decisions made in a short span, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessAuths {
    /// One entry per Access-Request decided.
    pub decisions: Vec<AccessAuth>,
}

impl Event for AccessAuths {
    const EVENT_TYPE: &'static str = "access.auth";
    const SCHEMA_VERSION: u16 = 2;
}

/// Decodes an `access.auth` event of either schema: version 2 (a batch) as it is, and
/// version 1 (one decision per event) as a batch of one, timed by its envelope.
pub fn decode_auths(bytes: &[u8]) -> Result<Envelope<AccessAuths>, CodecError> {
    decode_batch(bytes, 2, |mut one: AccessAuth, occurred_at| {
        one.time.get_or_insert(occurred_at);
        AccessAuths {
            decisions: vec![one],
        }
    })
}

/// Acct-Status-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcctStatus {
    /// A session began.
    Start,
    /// A session ended.
    Stop,
    /// A session is still up; the counters are cumulative.
    InterimUpdate,
    /// The NAS (re)started: none of its earlier sessions is still up.
    AccountingOn,
    /// The NAS is going down: all its sessions end.
    AccountingOff,
}

/// `access.acct`: one Accounting-Request, as the NAS sent it. The counters are
/// cumulative for the session, with Gigawords already folded in (64-bit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessAcct {
    /// Acct-Status-Type.
    pub status: AcctStatus,
    /// The NAS's source address.
    pub nas_ip: String,
    /// NAS-Identifier, if sent.
    #[serde(default)]
    pub nas_identifier: Option<String>,
    /// NAS-Port, if sent.
    #[serde(default)]
    pub nas_port: Option<u32>,
    /// User-Name, if sent (Accounting-On/Off carry none).
    #[serde(default)]
    pub user: Option<String>,
    /// Acct-Session-Id, if sent.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Framed-IP-Address, if sent.
    #[serde(default)]
    pub framed_ip: Option<String>,
    /// Calling-Station-Id, if sent.
    #[serde(default)]
    pub calling_station_id: Option<String>,
    /// Acct-Session-Time in seconds, if sent.
    #[serde(default)]
    pub session_time: Option<u32>,
    /// Acct-Input-Octets + 2^32 × Acct-Input-Gigawords.
    #[serde(default)]
    pub input_octets: Option<u64>,
    /// Acct-Output-Octets + 2^32 × Acct-Output-Gigawords.
    #[serde(default)]
    pub output_octets: Option<u64>,
    /// Acct-Input-Packets, if sent.
    #[serde(default)]
    pub input_packets: Option<u32>,
    /// Acct-Output-Packets, if sent.
    #[serde(default)]
    pub output_packets: Option<u32>,
    /// Acct-Terminate-Cause, as its dictionary name (`User-Request`) or number.
    #[serde(default)]
    pub terminate_cause: Option<String>,
    /// When the NAS says this happened: Event-Timestamp, or arrival minus
    /// Acct-Delay-Time.
    pub event_time: DateTime<Utc>,
}

impl Event for AccessAcct {
    const EVENT_TYPE: &'static str = "access.acct";
    const SCHEMA_VERSION: u16 = 1;
}
