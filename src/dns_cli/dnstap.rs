//! A dnstap writer: Frame Streams framing around protobuf `Dnstap` messages.
//!
//! Written by hand: the format is two small, fixed schemas (fstrm's unidirectional file
//! framing and dnstap.proto's `Dnstap`/`Message`), and a protobuf code generator (prost
//! with a build script) would be a heavy dependency for the few fields written here.
//!
//! Each `dns.query` event becomes one `CLIENT_QUERY` message: the client's address and
//! port, the transport, the query time, and the query itself rebuilt as a wire message
//! from the recorded question (the log keeps the question, not the bytes). How it was
//! answered (rcode, answer count, which zone kind, latency) goes in the frame's `extra`
//! field as text, since no response bytes were kept to put in a `CLIENT_RESPONSE`.

use std::{io::Write, net::IpAddr, str::FromStr};

use hickory_proto::rr::RecordType;
use pampa_schemas::{DnsQuery, DnsTransport};

/// The content type dnstap readers expect in the START frame.
const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// Frame Streams control frame types and field.
const CONTROL_START: u32 = 0x02;
const CONTROL_STOP: u32 = 0x03;
const FIELD_CONTENT_TYPE: u32 = 0x01;
/// dnstap `Message.Type.CLIENT_QUERY`.
const CLIENT_QUERY: u64 = 5;

/// Writes one dnstap file.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Starts the file with its START control frame.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let mut control = Vec::new();
        control.extend_from_slice(&CONTROL_START.to_be_bytes());
        control.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        control.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        control.extend_from_slice(CONTENT_TYPE);
        write_control(&mut out, &control)?;
        Ok(Writer { out })
    }

    /// Appends one query as a data frame.
    pub fn write(&mut self, query: &DnsQuery) -> std::io::Result<()> {
        let frame = encode(query);
        self.out.write_all(&(frame.len() as u32).to_be_bytes())?;
        self.out.write_all(&frame)
    }

    /// Ends the file with its STOP control frame.
    pub fn finish(mut self) -> std::io::Result<()> {
        write_control(&mut self.out, &CONTROL_STOP.to_be_bytes())?;
        self.out.flush()
    }
}

/// A control frame: an escape (a zero length), the frame's length, the frame.
fn write_control(out: &mut impl Write, control: &[u8]) -> std::io::Result<()> {
    out.write_all(&0u32.to_be_bytes())?;
    out.write_all(&(control.len() as u32).to_be_bytes())?;
    out.write_all(control)
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const BYTES: u64 = 2;
const FIXED32: u64 = 5;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn put_varint(out: &mut Vec<u8>, field: u64, value: u64) {
    key(out, field, VARINT);
    varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    key(out, field, BYTES);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_fixed32(out: &mut Vec<u8>, field: u64, value: u32) {
    key(out, field, FIXED32);
    out.extend_from_slice(&value.to_le_bytes());
}

/// One `Dnstap` message (dnstap.proto field numbers).
fn encode(query: &DnsQuery) -> Vec<u8> {
    let mut message = Vec::new();
    put_varint(&mut message, 1, CLIENT_QUERY);
    let address = IpAddr::from_str(&query.client_ip).ok();
    if let Some(address) = address {
        let (family, bytes) = match address {
            IpAddr::V4(v4) => (1, v4.octets().to_vec()),
            IpAddr::V6(v6) => (2, v6.octets().to_vec()),
        };
        put_varint(&mut message, 2, family);
        put_bytes(&mut message, 4, &bytes);
    }
    let protocol = match query.transport {
        DnsTransport::Udp => 1,
        DnsTransport::Tcp => 2,
    };
    put_varint(&mut message, 3, protocol);
    put_varint(&mut message, 6, u64::from(query.client_port));
    let queried = query.time;
    put_varint(&mut message, 8, queried.timestamp().max(0) as u64);
    put_fixed32(&mut message, 9, queried.timestamp_subsec_nanos());
    if let Some(wire) = query_message(query) {
        put_bytes(&mut message, 10, &wire);
    }

    let mut dnstap = Vec::new();
    put_bytes(&mut dnstap, 1, b"pampa");
    put_bytes(
        &mut dnstap,
        2,
        concat!("pampa ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    let answer = format!(
        "rcode={} answers={} zone_kind={} latency_us={} response_size={}",
        query.rcode,
        query.answer_count,
        query.zone_kind.as_str(),
        query.latency_us,
        query.response_size
    );
    put_bytes(&mut dnstap, 3, answer.as_bytes());
    put_bytes(&mut dnstap, 14, &message);
    put_varint(&mut dnstap, 15, 1); // Dnstap.Type.MESSAGE
    dnstap
}

/// The query as a wire message, rebuilt from the recorded question; `None` when the
/// query had no readable question.
fn query_message(query: &DnsQuery) -> Option<Vec<u8>> {
    if query.qname.is_empty() {
        return None;
    }
    let qtype = u16::from(RecordType::from_str(&query.qtype).ok()?);
    let qclass: u16 = match query.qclass.as_str() {
        "IN" => 1,
        "CH" => 3,
        "HS" => 4,
        "ANY" => 255,
        other => other.strip_prefix("CLASS")?.parse().ok()?,
    };
    let mut wire = Vec::with_capacity(query.qname.len() + 18);
    wire.extend_from_slice(&query.id.unwrap_or(0).to_be_bytes());
    wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // flags, 1 question
    for label in query.qname.trim_end_matches('.').split('.') {
        if label.is_empty() {
            continue;
        }
        let bytes = label.as_bytes();
        if bytes.len() > 63 {
            return None;
        }
        wire.push(bytes.len() as u8);
        wire.extend_from_slice(bytes);
    }
    wire.push(0);
    wire.extend_from_slice(&qtype.to_be_bytes());
    wire.extend_from_slice(&qclass.to_be_bytes());
    Some(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> DnsQuery {
        DnsQuery {
            time: chrono::DateTime::from_timestamp(1_609_664_398, 355_231_260).unwrap_or_default(),
            client_ip: "10.0.0.210".into(),
            client_port: 55142,
            transport: DnsTransport::Udp,
            qname: "www.google.fr.".into(),
            qtype: "A".into(),
            qclass: "IN".into(),
            rcode: "NOERROR".into(),
            answer_count: 1,
            zone_kind: pampa_schemas::ZoneKind::Recursive,
            latency_us: 10,
            response_size: 60,
            id: Some(0xdaba),
            zone: None,
            truncated: false,
            rate_limited: false,
        }
    }

    /// The bytes of a top-level length-delimited field (lengths here are one byte).
    fn field(frame: &[u8], wanted: u8) -> Option<Vec<u8>> {
        let mut i = 0;
        while i < frame.len() {
            let (number, wire) = (frame[i] >> 3, frame[i] & 7);
            i += 1;
            match wire {
                0 => {
                    while frame[i] & 0x80 != 0 {
                        i += 1;
                    }
                    i += 1;
                }
                2 => {
                    let (mut len, mut shift) = (0usize, 0);
                    loop {
                        let b = frame[i];
                        len |= usize::from(b & 0x7f) << shift;
                        shift += 7;
                        i += 1;
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    if number == wanted {
                        return Some(frame[i..i + len].to_vec());
                    }
                    i += len;
                }
                _ => return None,
            }
        }
        None
    }

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn a_query_encodes_the_fields_dnstap_readers_need() {
        let frame = encode(&query());
        // identity, then the message (field 14), then the type (field 15) = MESSAGE.
        assert!(frame.starts_with(&[10, 5, b'p', b'a', b'm', b'p', b'a']));
        assert!(frame.ends_with(&[120, 1]));
        // extra (field 3) says how it was answered.
        let extra = b"rcode=NOERROR answers=1 zone_kind=recursive";
        assert!(frame.windows(extra.len()).any(|w| w == extra));
        // Message.type = CLIENT_QUERY, family INET, protocol UDP, the address.
        let message = field(&frame, 14).unwrap_or_default();
        assert!(
            message.starts_with(&[8, 5, 16, 1, 34, 4, 10, 0, 0, 210, 24, 1]),
            "{message:?}"
        );
        let wire = query_message(&query()).unwrap_or_default();
        assert_eq!(&wire[..6], &[0xda, 0xba, 0, 0, 0, 1]);
        assert!(wire.ends_with(&[
            3, b'w', b'w', b'w', 6, b'g', b'o', b'o', b'g', b'l', b'e', 2, b'f', b'r', 0, 0, 1, 0,
            1
        ]));
    }

    #[test]
    fn the_file_is_framed() {
        let mut file = Vec::new();
        let mut writer = Writer::new(&mut file).unwrap_or_else(|e| panic!("{e}"));
        writer.write(&query()).unwrap_or_else(|e| panic!("{e}"));
        writer.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&file[..4], &[0, 0, 0, 0]);
        assert_eq!(&file[8..12], &CONTROL_START.to_be_bytes());
        assert!(file.ends_with(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]));
    }
}
