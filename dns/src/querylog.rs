//! The query log: `dns.query` events published off the answer path.
//!
//! The answer path only queues a small [`QueryRecord`] (no formatting, and no allocation
//! for names up to 32 bytes of labels) and wakes the publisher at most twice per batch:
//! when the queue goes from empty to one record, and when it reaches the flush size.
//! The publisher then waits [`FLUSH_EVERY`] for more, turns the records into `dns.query`
//! events of up to [`QUERIES_PER_EVENT`] queries each ([`DnsQueries`], column by column)
//! and hands them to the log as one [`EventLog::publish_batch`]. An event per query cost
//! more than answering the query (an id, an envelope, headers and a log row each, about
//! 11 µs); a batch costs about one row per thousand queries.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RecordType},
};
use pampa_bus::{EventLog, OutgoingEvent};
use pampa_schemas::{new_id, DnsQueries, DnsTransport, Envelope, ZoneKind};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::metrics;

/// The `source` of the events.
pub const SOURCE: &str = "dns";
/// How long the publisher lets records gather after the first one arrives: long enough
/// that a batch at ordinary rates holds hundreds of queries (each batch pays a commit
/// and an fsync: at 10,000 queries a second and 10 ms that was ~14 µs per query), short
/// enough that a query is in the log well within a second. Under heavy load batches
/// fill to [`FLUSH_AT`] sooner.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Records that end the wait early (capped at a quarter of the queue, so a small queue
/// is flushed before it fills).
const FLUSH_AT: usize = 2048;
/// Most events in one published batch.
const MAX_BATCH: usize = 4096;
/// Queries in one `dns.query` event: a few hundred KB at most even with long names, well
/// under JetStream's 1 MB message limit.
const QUERIES_PER_EVENT: usize = 1024;
/// Batches being published at once: the next batch is built while the log commits the
/// previous one.
const IN_FLIGHT: usize = 4;

/// One answered query, as the answer path hands it over. The event's strings are made
/// from it by the publisher, on its own time.
#[derive(Debug, Clone)]
pub(crate) struct QueryRecord {
    /// When the query arrived.
    pub time: DateTime<Utc>,
    /// Who asked.
    pub peer: SocketAddr,
    /// UDP or TCP.
    pub transport: DnsTransport,
    /// The message id, when the header could be read.
    pub id: Option<u16>,
    /// The first question, when there was a readable one.
    pub question: Option<(Name, RecordType, DNSClass)>,
    /// The rcode sent.
    pub rcode: ResponseCode,
    /// Records in the answer section.
    pub answer_count: u16,
    /// Which part of the server answered.
    pub zone_kind: ZoneKind,
    /// Microseconds from reading the query to handing the response over.
    pub latency_us: u64,
    /// Bytes sent (0 when nothing was).
    pub response_size: u32,
    /// The apex of the zone that answered.
    pub zone: Option<Name>,
    /// TC was set.
    pub truncated: bool,
    /// The rate limit held the answer back.
    pub rate_limited: bool,
}

/// What appending the records of one event reuses from record to record.
#[derive(Default)]
struct Appender {
    /// The zone of the last record appended (`Some(None)`: it had none): a batch is
    /// mostly one or two zones, and formatting a `Name` costs more than comparing it.
    last_zone: Option<Option<Name>>,
    /// The client address is printed here, and copied only when the batch has not seen
    /// it yet.
    address: String,
}

impl QueryRecord {
    /// Appends the record to `batch`, column by column. The repeating columns are
    /// dictionaries ([`pampa_schemas::Dictionary`]): their known values cost a lookup,
    /// not an allocation.
    fn append_to(self, batch: &mut DnsQueries, appender: &mut Appender) {
        use std::fmt::Write;
        batch.time_us.push(self.time.timestamp_micros());
        appender.address.clear();
        let _ = write!(appender.address, "{}", self.peer.ip().to_canonical());
        batch.client_ip.push_borrowed(appender.address.as_str());
        batch.client_port.push(self.peer.port());
        batch.transport.push(self.transport);
        match self.question {
            Some((name, qtype, qclass)) => {
                batch.qname.push(qname_text(&name));
                batch.qtype.push_borrowed(&*type_name(qtype));
                match class_label(qclass) {
                    Some(label) => batch.qclass.push_borrowed(label),
                    None => batch.qclass.push(format!("CLASS{}", u16::from(qclass))),
                }
            }
            None => {
                batch.qname.push(String::new());
                batch.qtype.push_borrowed("");
                batch.qclass.push_borrowed("");
            }
        }
        match crate::server::rcode_label(self.rcode) {
            "OTHER" => batch.rcode.push(format!("RCODE{}", u16::from(self.rcode))),
            label => batch.rcode.push_borrowed(label),
        }
        batch.answer_count.push(self.answer_count);
        batch.zone_kind.push(self.zone_kind);
        batch.latency_us.push(self.latency_us);
        batch.response_size.push(self.response_size);
        batch.id.push(self.id);
        let same_zone = match (&appender.last_zone, &self.zone) {
            (Some(Some(last)), Some(zone)) => last.eq_case(zone),
            (Some(None), None) => true,
            _ => false,
        };
        if !(same_zone && batch.zone.repeat_last()) {
            batch.zone.push(self.zone.as_ref().map(Name::to_string));
            appender.last_zone = Some(self.zone);
        }
        batch.truncated.push(self.truncated);
        batch.rate_limited.push(self.rate_limited);
    }
}

/// The name as hickory prints it lowercased (`www.example.net.`), without the formatting
/// machinery for the usual names: labels of letters, digits, `-` and `_` are copied
/// byte by byte. Anything else (escapes, a relative name) takes hickory's own path.
/// Formatting every logged name through `Display` was a visible share of a DNSBL answer.
pub(crate) fn qname_text(name: &Name) -> String {
    let plain = |label: &[u8]| {
        label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    };
    if !name.is_fqdn() || !name.iter().all(plain) {
        return name.to_lowercase().to_string();
    }
    if name.is_root() {
        return ".".to_owned();
    }
    let mut text = String::with_capacity(name.len() + 1);
    for label in name.iter() {
        text.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        text.push('.');
    }
    text
}

/// The question type's mnemonic, `TYPEn` for unknown ones (RFC 3597); borrowed for the
/// known ones, so that logging them allocates nothing.
pub(crate) fn type_name(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

/// The class's mnemonic, `None` for those written `CLASSn`.
fn class_label(c: DNSClass) -> Option<&'static str> {
    Some(match c {
        DNSClass::IN => "IN",
        DNSClass::CH => "CH",
        DNSClass::HS => "HS",
        DNSClass::NONE => "NONE",
        DNSClass::ANY => "ANY",
        _ => return None,
    })
}

/// The answer path's end of the query log.
pub(crate) struct Queue {
    tx: mpsc::Sender<QueryRecord>,
    /// Records queued since the publisher last started draining. Counted here rather
    /// than read from the channel so that exactly one push sees each value: the one
    /// that sees 1 wakes the publisher, and so does the one that sees the flush size.
    pending: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    flush_at: usize,
    /// Created on the first drop, so the series appears only once something is lost,
    /// and looked up once instead of per drop.
    queue_full: OnceLock<::metrics::Counter>,
    closed: OnceLock<::metrics::Counter>,
}

/// The publisher's end of the query log.
pub(crate) struct Publisher {
    rx: mpsc::Receiver<QueryRecord>,
    pending: Arc<AtomicUsize>,
    wake: Arc<Notify>,
}

/// A queue of `capacity` records and the publisher that empties it.
pub(crate) fn channel(capacity: usize) -> (Queue, Publisher) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let pending = Arc::new(AtomicUsize::new(0));
    let wake = Arc::new(Notify::new());
    (
        Queue {
            tx,
            pending: pending.clone(),
            wake: wake.clone(),
            flush_at: (capacity / 4).clamp(1, FLUSH_AT),
            queue_full: OnceLock::new(),
            closed: OnceLock::new(),
        },
        Publisher { rx, pending, wake },
    )
}

fn dropped_counter(reason: &'static str) -> ::metrics::Counter {
    ::metrics::counter!(metrics::QUERY_LOG_DROPPED_TOTAL, "reason" => reason)
}

impl Queue {
    /// Queues one record without waiting; a full queue drops it and counts it.
    pub(crate) fn push(&self, record: QueryRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {
                let n = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
                if n == 1 || n == self.flush_at {
                    self.wake.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => self
                .queue_full
                .get_or_init(|| dropped_counter("queue_full"))
                .increment(1),
            Err(mpsc::error::TrySendError::Closed(_)) => self
                .closed
                .get_or_init(|| dropped_counter("publish_failed"))
                .increment(1),
        }
    }
}

/// Drains the queue into the log in batches until `stop` turns true; then publishes
/// what is still queued and waits for the batches in flight.
pub(crate) async fn run(
    publisher: Publisher,
    log: EventLog,
    publish_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Publisher {
        mut rx,
        pending,
        wake,
    } = publisher;
    let failed: Arc<OnceLock<::metrics::Counter>> = Arc::new(OnceLock::new());
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut stopping = false;
    while !stopping {
        // Idle until the first record, then give the batch time to fill (or until it
        // reaches the flush size).
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => stopping = true,
        }
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = wake.notified() => {}
                _ = stop.changed() => stopping = true,
            }
        }
        if stopping {
            rx.close();
        }
        // Reset before draining: a record queued from here on counts from 1 again and
        // so wakes the next round, whether or not this drain takes it too.
        pending.store(0, Ordering::Release);
        loop {
            let mut records = Vec::with_capacity(MAX_BATCH);
            let n = if stopping || !rx.is_empty() {
                rx.recv_many(&mut records, MAX_BATCH).await
            } else {
                0
            };
            if n == 0 {
                break;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let (log, failed) = (log.clone(), failed.clone());
            tokio::spawn(async move {
                publish(records, &log, publish_timeout, &failed).await;
                drop(permit);
            });
            if n < MAX_BATCH && !stopping {
                break;
            }
        }
    }
    let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
}

/// Builds the `dns.query` events of `records` and publishes them as one batch; the
/// queries not stored are counted as `publish_failed`.
async fn publish(
    records: Vec<QueryRecord>,
    log: &EventLog,
    publish_timeout: Duration,
    failed: &OnceLock<::metrics::Counter>,
) {
    let total = records.len();
    let mut events = Vec::with_capacity(total.div_ceil(QUERIES_PER_EVENT));
    let mut lost = 0;
    let mut records = records.into_iter().peekable();
    while let Some(first_time) = records.peek().map(|r| r.time) {
        let mut queries = DnsQueries::default();
        let mut appender = Appender::default();
        records
            .by_ref()
            .take(QUERIES_PER_EVENT)
            .for_each(|record| record.append_to(&mut queries, &mut appender));
        let n = queries.len();
        let mut envelope = Envelope::root(new_id(), SOURCE, queries);
        envelope.occurred_at = first_time;
        match OutgoingEvent::from_envelope(&envelope) {
            Ok(event) => events.push((event, n)),
            Err(_) => lost += n,
        }
    }
    let stored: usize = events.iter().map(|(_, n)| n).sum();
    let events: Vec<OutgoingEvent> = events.into_iter().map(|(event, _)| event).collect();
    match tokio::time::timeout(publish_timeout, log.publish_batch(&events)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, queries = stored, "DNS query events could not be stored.");
            lost += stored;
        }
        Err(_) => {
            tracing::debug!(queries = stored, "Storing DNS query events timed out.");
            lost += stored;
        }
    }
    if lost > 0 {
        failed
            .get_or_init(|| dropped_counter("publish_failed"))
            .increment(lost as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn record(
        qname: &str,
        qtype: RecordType,
        zone: Option<&str>,
        rcode: ResponseCode,
    ) -> QueryRecord {
        QueryRecord {
            time: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            peer: "[::ffff:10.1.2.3]:5300".parse().unwrap(),
            transport: DnsTransport::Udp,
            id: Some(7),
            question: Some((Name::from_str(qname).unwrap(), qtype, DNSClass::IN)),
            rcode,
            answer_count: 1,
            zone_kind: ZoneKind::Dnsbl,
            latency_us: 12,
            response_size: 78,
            zone: zone.map(|z| Name::from_str(z).unwrap()),
            truncated: false,
            rate_limited: false,
        }
    }

    /// The columns read back as the records were, through the dictionaries and the
    /// zone that repeats without being formatted again.
    #[test]
    fn records_append_to_a_batch_as_they_were() {
        let records = [
            record(
                "2.0.0.127.BL.example.net.",
                RecordType::A,
                Some("bl.example.net."),
                ResponseCode::NoError,
            ),
            record(
                "3.0.0.127.bl.example.net.",
                RecordType::TXT,
                Some("bl.example.net."),
                ResponseCode::NXDomain,
            ),
            record(
                "www.example.org.",
                RecordType::Unknown(65280),
                None,
                ResponseCode::Unknown(3000),
            ),
            record("x.example.org.", RecordType::A, None, ResponseCode::Refused),
            record(
                "4.0.0.127.bl.example.net.",
                RecordType::A,
                Some("bl.example.net."),
                ResponseCode::NoError,
            ),
        ];
        let mut batch = DnsQueries::default();
        let mut appender = Appender::default();
        for r in records {
            r.append_to(&mut batch, &mut appender);
        }
        let queries: Vec<_> = batch.iter().collect();
        assert_eq!(queries.len(), 5);
        let first = &queries[0];
        assert_eq!(first.time.timestamp_micros(), 1_795_000_000_123_456);
        assert_eq!(
            (first.client_ip.as_str(), first.client_port),
            ("10.1.2.3", 5300)
        );
        assert_eq!(first.qname, "2.0.0.127.bl.example.net.");
        assert_eq!((first.qtype.as_str(), first.qclass.as_str()), ("A", "IN"));
        assert_eq!(first.rcode, "NOERROR");
        assert_eq!(
            (first.id, first.latency_us, first.response_size),
            (Some(7), 12, 78)
        );
        assert_eq!(queries[1].qtype, "TXT");
        assert_eq!(queries[2].qtype, "TYPE65280");
        assert_eq!(queries[2].rcode, "RCODE3000");
        assert_eq!(queries[3].rcode, "REFUSED");
        let zones: Vec<_> = queries.iter().map(|q| q.zone.as_deref()).collect();
        assert_eq!(
            zones,
            [
                Some("bl.example.net."),
                Some("bl.example.net."),
                None,
                None,
                Some("bl.example.net.")
            ]
        );
        assert_eq!(batch.client_ip.values().len(), 1);
        assert_eq!(batch.zone.values().len(), 2);
    }

    #[test]
    fn names_print_as_hickory_prints_them_lowercased() {
        for text in [
            ".",
            "www.Example.NET.",
            "2.0.0.127.bl.example.net.",
            "_sip._tcp.example.org.",
            "a-b.c_d.",
            "relative.name",
        ] {
            let name = Name::from_str(text).unwrap();
            assert_eq!(qname_text(&name), name.to_lowercase().to_string(), "{text}");
        }
        // Bytes that need escapes: a space, a dot inside a label, non-ASCII, upper case.
        let odd: [&[u8]; 4] = [b"with space", b"dot.inside", &[0xc8, 0xc9], b"MiXed"];
        let name = Name::from_labels(odd.iter().copied()).unwrap();
        assert_eq!(qname_text(&name), name.to_lowercase().to_string());
    }
}
