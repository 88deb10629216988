//! Payloads of the DNS role: one `dns.query` event per query answered (or dropped).
//!
//! The fields follow dnstap's `Message` (client address and port, transport, the
//! question, the response code and size, query and response times) so the log can be
//! exported to dnstap tools, plus pampa's own view of *who* answered ([`ZoneKind`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Event;

/// The transport a query came in on (dnstap's `socket_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsTransport {
    /// DNS over UDP.
    Udp,
    /// DNS over TCP.
    Tcp,
}

impl DnsTransport {
    /// The lowercase name, as serialized and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
        }
    }
}

/// Which part of the server produced the answer. Also the `zone_kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    /// One of pampa's own authoritative zones (`[[dns.zones]]`).
    Authoritative,
    /// A local DNSBL mirror zone (`[[dns.dnsbl]]`).
    Dnsbl,
    /// Resolved now, by forwarding or full recursion.
    Recursive,
    /// Answered from the recursion cache.
    Cache,
    /// Refused: recursion asked for by a client outside `recursion_allowed`, or a
    /// question pampa does not serve (zone transfers, other classes).
    Refused,
    /// No zone was consulted: malformed queries, unsupported opcodes.
    None,
}

impl ZoneKind {
    /// The snake_case name, as serialized and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::Authoritative => "authoritative",
            ZoneKind::Dnsbl => "dnsbl",
            ZoneKind::Recursive => "recursive",
            ZoneKind::Cache => "cache",
            ZoneKind::Refused => "refused",
            ZoneKind::None => "none",
        }
    }
}

/// `dns.query`: one DNS query and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsQuery {
    /// When the query arrived (dnstap's `query_time`).
    pub time: DateTime<Utc>,
    /// The client's address (dnstap's `query_address`).
    pub client_ip: String,
    /// The client's source port (dnstap's `query_port`).
    pub client_port: u16,
    /// UDP or TCP (dnstap's `socket_protocol`).
    pub transport: DnsTransport,
    /// The question's name, lowercased, with the trailing dot (`www.example.net.`).
    /// Empty when the query had no readable question.
    pub qname: String,
    /// The question's type mnemonic (`A`, `MX`, `TYPE65280`).
    pub qtype: String,
    /// The question's class (`IN`, `CH`).
    pub qclass: String,
    /// The response code sent (`NOERROR`, `NXDOMAIN`, `REFUSED`, `FORMERR`…).
    pub rcode: String,
    /// Records in the answer section sent.
    pub answer_count: u16,
    /// Which part of the server answered.
    pub zone_kind: ZoneKind,
    /// Microseconds from reading the query to handing the response to the socket.
    pub latency_us: u64,
    /// Bytes of the response sent; 0 when none was (dropped by the rate limit).
    pub response_size: u32,
    /// The query's message id, when its header could be read.
    #[serde(default)]
    pub id: Option<u16>,
    /// The zone that answered (`example.net.`), for authoritative and DNSBL answers.
    #[serde(default)]
    pub zone: Option<String>,
    /// Whether the response was truncated (TC set) to fit the client's UDP size, or as
    /// a rate-limit slip.
    #[serde(default)]
    pub truncated: bool,
    /// Whether the response-rate limit held this answer back (dropped, or slipped as a
    /// truncated response).
    #[serde(default)]
    pub rate_limited: bool,
}

impl Event for DnsQuery {
    const EVENT_TYPE: &'static str = "dns.query";
    const SCHEMA_VERSION: u16 = 1;
}
