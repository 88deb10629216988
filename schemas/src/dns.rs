//! Payloads of the DNS role: the query log, `dns.query`.
//!
//! Every query answered (or dropped) is one [`DnsQuery`] record. The fields follow dnstap's
//! `Message` (client address and port, transport, the question, the response code and
//! size, query and response times) so the log can be exported to dnstap tools, plus
//! pampa's own view of *who* answered ([`ZoneKind`]).
//!
//! Since schema version 2 a `dns.query` event carries a batch of records
//! ([`DnsQueries`]), stored column by column: a resolver answers 100k+ queries a second,
//! and an event (an id, an envelope, headers, a log row) per query cost several times
//! more than answering it. A batch costs one row per thousand queries, and columns drop
//! the field names that named encoding would repeat in every record, while a reader
//! still skips columns it does not know. Since version 3 the columns whose values
//! repeat (address, transport, type, class, rcode, zone kind, zone) are
//! [`Dictionary`] columns, which store each distinct value once: a DNSBL query's
//! record shrank from about 68 bytes to about 40. Version 2's plain columns read into
//! the same type, and version 1 events (one record each) read as a batch of one: see
//! [`decode_queries`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{codec::decode_batch, column::Dictionary, CodecError, Envelope, Event};

/// The transport a query came in on (dnstap's `socket_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// One DNS query and how it was answered: a record of a `dns.query` event (and, in
/// schema version 1, the whole payload of one).
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

/// `dns.query` (schema version 3): the queries answered in a short span, column by
/// column. Every column has one entry per query; a column a newer writer added and an
/// older one lacks reads as empty, and its entries as their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsQueries {
    /// When each query arrived, in microseconds since the Unix epoch.
    pub time_us: Vec<i64>,
    /// See [`DnsQuery::client_ip`].
    #[serde(default)]
    pub client_ip: Dictionary<String>,
    /// See [`DnsQuery::client_port`].
    #[serde(default)]
    pub client_port: Vec<u16>,
    /// See [`DnsQuery::transport`].
    #[serde(default)]
    pub transport: Dictionary<DnsTransport>,
    /// See [`DnsQuery::qname`].
    #[serde(default)]
    pub qname: Vec<String>,
    /// See [`DnsQuery::qtype`].
    #[serde(default)]
    pub qtype: Dictionary<String>,
    /// See [`DnsQuery::qclass`].
    #[serde(default)]
    pub qclass: Dictionary<String>,
    /// See [`DnsQuery::rcode`].
    #[serde(default)]
    pub rcode: Dictionary<String>,
    /// See [`DnsQuery::answer_count`].
    #[serde(default)]
    pub answer_count: Vec<u16>,
    /// See [`DnsQuery::zone_kind`].
    #[serde(default)]
    pub zone_kind: Dictionary<ZoneKind>,
    /// See [`DnsQuery::latency_us`].
    #[serde(default)]
    pub latency_us: Vec<u64>,
    /// See [`DnsQuery::response_size`].
    #[serde(default)]
    pub response_size: Vec<u32>,
    /// See [`DnsQuery::id`].
    #[serde(default)]
    pub id: Vec<Option<u16>>,
    /// See [`DnsQuery::zone`].
    #[serde(default)]
    pub zone: Dictionary<Option<String>>,
    /// See [`DnsQuery::truncated`].
    #[serde(default)]
    pub truncated: Vec<bool>,
    /// See [`DnsQuery::rate_limited`].
    #[serde(default)]
    pub rate_limited: Vec<bool>,
}

impl Event for DnsQueries {
    const EVENT_TYPE: &'static str = "dns.query";
    const SCHEMA_VERSION: u16 = 3;
}

/// Entry `i` of a column, or the default where the column is shorter (a column the
/// writer did not know).
fn at<T: Clone + Default>(column: &[T], i: usize) -> T {
    column.get(i).cloned().unwrap_or_default()
}

/// Entry `i` of a dictionary column, or the default where the column is shorter.
fn entry<T: Clone + Default + Eq + std::hash::Hash>(column: &Dictionary<T>, i: usize) -> T {
    column.get(i).cloned().unwrap_or_default()
}

impl DnsQueries {
    /// Queries in the batch.
    pub fn len(&self) -> usize {
        self.time_us.len()
    }

    /// Whether the batch holds no query.
    pub fn is_empty(&self) -> bool {
        self.time_us.is_empty()
    }

    /// Appends one query.
    pub fn push(&mut self, query: DnsQuery) {
        self.time_us.push(query.time.timestamp_micros());
        self.client_ip.push(query.client_ip);
        self.client_port.push(query.client_port);
        self.transport.push(query.transport);
        self.qname.push(query.qname);
        self.qtype.push(query.qtype);
        self.qclass.push(query.qclass);
        self.rcode.push(query.rcode);
        self.answer_count.push(query.answer_count);
        self.zone_kind.push(query.zone_kind);
        self.latency_us.push(query.latency_us);
        self.response_size.push(query.response_size);
        self.id.push(query.id);
        self.zone.push(query.zone);
        self.truncated.push(query.truncated);
        self.rate_limited.push(query.rate_limited);
    }

    /// Query `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<DnsQuery> {
        let time_us = *self.time_us.get(i)?;
        Some(DnsQuery {
            time: DateTime::from_timestamp_micros(time_us).unwrap_or_default(),
            client_ip: entry(&self.client_ip, i),
            client_port: at(&self.client_port, i),
            transport: self.transport.get(i).copied().unwrap_or(DnsTransport::Udp),
            qname: at(&self.qname, i),
            qtype: entry(&self.qtype, i),
            qclass: entry(&self.qclass, i),
            rcode: entry(&self.rcode, i),
            answer_count: at(&self.answer_count, i),
            zone_kind: self.zone_kind.get(i).copied().unwrap_or(ZoneKind::None),
            latency_us: at(&self.latency_us, i),
            response_size: at(&self.response_size, i),
            id: at(&self.id, i),
            zone: entry(&self.zone, i),
            truncated: at(&self.truncated, i),
            rate_limited: at(&self.rate_limited, i),
        })
    }

    /// The queries, in the order they were answered.
    pub fn iter(&self) -> impl Iterator<Item = DnsQuery> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl FromIterator<DnsQuery> for DnsQueries {
    fn from_iter<I: IntoIterator<Item = DnsQuery>>(queries: I) -> Self {
        let mut batch = DnsQueries::default();
        queries.into_iter().for_each(|q| batch.push(q));
        batch
    }
}

/// Decodes a `dns.query` event of any schema: versions 2 (plain columns) and 3
/// (dictionary columns) as the batch they are, and version 1 (one query per event) as a
/// batch of one.
pub fn decode_queries(bytes: &[u8]) -> Result<Envelope<DnsQueries>, CodecError> {
    decode_batch(bytes, 2, |one: DnsQuery, _| std::iter::once(one).collect())
}
