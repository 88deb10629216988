//! Accounting-Request → `access.acct`: the record, and the event id that makes a
//! retransmission land on the event it repeats.

use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use pampa_schemas::{derive_id, AccessAcct, AcctStatus};
use sha2::{Digest, Sha256};

use crate::packet::{acct_status, attr, DecodeError, Packet};

/// The `source` of the events this crate publishes, and the namespace of derived ids.
pub const SOURCE: &str = "radius";

/// Acct-Terminate-Cause names (RFC 2866 §5.10, RFC 3580).
fn terminate_cause(value: u32) -> String {
    const NAMES: [&str; 22] = [
        "User-Request",
        "Lost-Carrier",
        "Lost-Service",
        "Idle-Timeout",
        "Session-Timeout",
        "Admin-Reset",
        "Admin-Reboot",
        "Port-Error",
        "NAS-Error",
        "NAS-Request",
        "NAS-Reboot",
        "Port-Unneeded",
        "Port-Preempted",
        "Port-Suspended",
        "Service-Unavailable",
        "Callback",
        "User-Error",
        "Host-Request",
        "Supplicant-Restart",
        "Reauthentication-Failure",
        "Port-Reinitialized",
        "Port-Administratively-Disabled",
    ];
    value
        .checked_sub(1)
        .and_then(|i| NAMES.get(i as usize))
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| value.to_string())
}

/// A 64-bit counter from its low 32 bits and its Gigawords (RFC 2869 §5.1).
pub fn fold_gigawords(octets: Option<u32>, gigawords: Option<u32>) -> Option<u64> {
    match (octets, gigawords) {
        (None, None) => None,
        (o, g) => Some(u64::from(o.unwrap_or(0)) | (u64::from(g.unwrap_or(0)) << 32)),
    }
}

/// The Acct-Status-Type of a packet; `Ok(None)` for one this server does not record
/// (Tunnel-Start, Failed…). A missing or malformed one is an error.
pub fn status_of(packet: &Packet<'_>) -> Result<Option<AcctStatus>, DecodeError> {
    let value = packet
        .u32(attr::ACCT_STATUS_TYPE)?
        .ok_or(DecodeError::BadAttributeValue {
            attribute: attr::ACCT_STATUS_TYPE,
        })?;
    Ok(match value {
        acct_status::START => Some(AcctStatus::Start),
        acct_status::STOP => Some(AcctStatus::Stop),
        acct_status::INTERIM_UPDATE => Some(AcctStatus::InterimUpdate),
        acct_status::ACCOUNTING_ON => Some(AcctStatus::AccountingOn),
        acct_status::ACCOUNTING_OFF => Some(AcctStatus::AccountingOff),
        _ => None,
    })
}

/// When the NAS says the event happened: Event-Timestamp, else the arrival time minus
/// Acct-Delay-Time (how long the NAS has been trying to send it).
pub fn event_time(
    packet: &Packet<'_>,
    arrival: DateTime<Utc>,
) -> Result<DateTime<Utc>, DecodeError> {
    if let Some(ts) = packet.u32(attr::EVENT_TIMESTAMP)? {
        return Utc.timestamp_opt(i64::from(ts), 0).single().ok_or(
            DecodeError::BadAttributeValue {
                attribute: attr::EVENT_TIMESTAMP,
            },
        );
    }
    let delay = packet.u32(attr::ACCT_DELAY_TIME)?.unwrap_or(0);
    Ok(arrival - chrono::Duration::seconds(i64::from(delay)))
}

/// The `access.acct` record of an Accounting-Request from `nas_ip` that arrived at
/// `arrival`, or `None` for a status this server does not record.
pub fn record_of(
    packet: &Packet<'_>,
    nas_ip: IpAddr,
    arrival: DateTime<Utc>,
) -> Result<Option<AccessAcct>, DecodeError> {
    let Some(status) = status_of(packet)? else {
        return Ok(None);
    };
    Ok(Some(AccessAcct {
        status,
        nas_ip: nas_ip.to_string(),
        nas_identifier: packet.text_lossy(attr::NAS_IDENTIFIER),
        nas_port: packet.u32(attr::NAS_PORT)?,
        user: packet.text_lossy(attr::USER_NAME),
        session_id: packet.text_lossy(attr::ACCT_SESSION_ID),
        framed_ip: packet
            .ipv4(attr::FRAMED_IP_ADDRESS)?
            .map(|ip| ip.to_string()),
        calling_station_id: packet.text_lossy(attr::CALLING_STATION_ID),
        session_time: packet.u32(attr::ACCT_SESSION_TIME)?,
        input_octets: fold_gigawords(
            packet.u32(attr::ACCT_INPUT_OCTETS)?,
            packet.u32(attr::ACCT_INPUT_GIGAWORDS)?,
        ),
        output_octets: fold_gigawords(
            packet.u32(attr::ACCT_OUTPUT_OCTETS)?,
            packet.u32(attr::ACCT_OUTPUT_GIGAWORDS)?,
        ),
        input_packets: packet.u32(attr::ACCT_INPUT_PACKETS)?,
        output_packets: packet.u32(attr::ACCT_OUTPUT_PACKETS)?,
        terminate_cause: packet.u32(attr::ACCT_TERMINATE_CAUSE)?.map(terminate_cause),
        event_time: event_time(packet, arrival)?,
    }))
}

/// How wide the time bucket is for records that carry nothing else to tell a new one
/// from a retransmission (see [`dedup_key`]).
const BUCKET_SECONDS: i64 = 600;

/// The dedup key of an Accounting-Request: what is equal for a retransmission and
/// different for any new record.
///
/// A retransmission (RFC 2866 §5.2) repeats the record with a higher Acct-Delay-Time,
/// and so with a new Identifier and Request Authenticator; none of those three can be
/// in the key. Everything else the NAS says is the record itself, so the key is SHA-256
/// over the NAS's address and every attribute in wire order except Acct-Delay-Time,
/// Message-Authenticator and Proxy-State (added by proxies on the way). A new
/// Interim-Update always differs in Acct-Session-Time or its counters (and in
/// Event-Timestamp when sent); a Start or Stop differs by Acct-Session-Id.
///
/// Accounting-On/Off without Event-Timestamp may be byte-identical across two reboots
/// of a NAS, and merging them would leave the sessions between them open. For those
/// only, the key also holds the 10-minute bucket of the event time (arrival minus
/// delay, which stays put across retransmissions). A retransmission series that
/// straddles a bucket edge is then recorded twice, which is harmless for these two.
pub fn dedup_key(packet: &Packet<'_>, nas_ip: IpAddr, record: &AccessAcct) -> String {
    let mut h = Sha256::new();
    h.update(nas_ip.to_string().as_bytes());
    h.update([0]);
    for a in packet.attributes() {
        if matches!(
            a.typ,
            attr::ACCT_DELAY_TIME | attr::MESSAGE_AUTHENTICATOR | attr::PROXY_STATE
        ) {
            continue;
        }
        h.update([a.typ, a.value.len() as u8]);
        h.update(a.value);
    }
    let nas_wide = matches!(
        record.status,
        AcctStatus::AccountingOn | AcctStatus::AccountingOff
    );
    if nas_wide && packet.get(attr::EVENT_TIMESTAMP).is_none() {
        h.update(b"bucket");
        h.update(
            record
                .event_time
                .timestamp()
                .div_euclid(BUCKET_SECONDS)
                .to_be_bytes(),
        );
    }
    hex::encode(h.finalize())
}

/// The event id of an Accounting-Request: derived from its dedup key, so the log drops
/// a retransmission that was already recorded.
pub fn event_id(dedup_key: &str) -> String {
    derive_id(&format!("acct:{dedup_key}"), SOURCE)
}

/// The correlation id of every record of one session: the RADIUS session is the root
/// of its history (DESIGN.md §3).
pub fn session_correlation_id(record: &AccessAcct) -> String {
    let session = record.session_id.as_deref().unwrap_or("");
    derive_id(&format!("session:{}/{session}", record.nas_ip), SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crypto::finish_accounting_request,
        packet::{Code, PacketWriter},
    };

    fn request(id: u8, attrs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut w = PacketWriter::new(Code::AccountingRequest, id);
        for (t, v) in attrs {
            w.push(*t, v).unwrap();
        }
        finish_accounting_request(w, b"s").unwrap()
    }

    fn u(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn key_of(bytes: &[u8], arrival: DateTime<Utc>) -> (String, AccessAcct) {
        let p = Packet::decode(bytes).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let r = record_of(&p, ip, arrival).unwrap().unwrap();
        (dedup_key(&p, ip, &r), r)
    }

    #[test]
    fn retransmissions_share_a_key_and_new_records_do_not() {
        let now = Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap();
        let base = |delay: u32, time: u32| {
            vec![
                (attr::ACCT_STATUS_TYPE, u(3)),
                (attr::ACCT_SESSION_ID, b"s1".to_vec()),
                (attr::ACCT_DELAY_TIME, u(delay)),
                (attr::ACCT_SESSION_TIME, u(time)),
            ]
        };
        let (first, r1) = key_of(&request(1, &base(0, 60)), now);
        // Same record, 7 s later with Acct-Delay-Time 7 and a new identifier.
        let (again, r2) = key_of(
            &request(2, &base(7, 60)),
            now + chrono::Duration::seconds(7),
        );
        assert_eq!(first, again);
        assert_eq!(r1.event_time, r2.event_time);
        assert_eq!(event_id(&first), event_id(&again));
        // The next interim is a new record.
        let (next, _) = key_of(&request(3, &base(0, 120)), now);
        assert_ne!(first, next);
        // So is the same record from another NAS.
        let bytes = request(1, &base(0, 60));
        let p = Packet::decode(&bytes).unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_ne!(dedup_key(&p, other, &r1), first);
    }

    #[test]
    fn accounting_on_without_timestamp_is_bucketed_by_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 3, 10, 1, 0).unwrap();
        let on = |delay| {
            vec![
                (attr::ACCT_STATUS_TYPE, u(7)),
                (attr::ACCT_DELAY_TIME, u(delay)),
            ]
        };
        let (a, _) = key_of(&request(1, &on(0)), now);
        let (b, _) = key_of(&request(2, &on(5)), now + chrono::Duration::seconds(5));
        assert_eq!(a, b);
        let (c, _) = key_of(&request(3, &on(0)), now + chrono::Duration::hours(2));
        assert_ne!(a, c);
    }

    #[test]
    fn builds_the_record_with_gigawords_and_event_time() {
        let arrival = Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 30).unwrap();
        let bytes = request(
            1,
            &[
                (attr::ACCT_STATUS_TYPE, u(2)),
                (attr::USER_NAME, b"alice".to_vec()),
                (attr::ACCT_SESSION_ID, b"s1".to_vec()),
                (attr::ACCT_INPUT_OCTETS, u(10)),
                (attr::ACCT_INPUT_GIGAWORDS, u(2)),
                (attr::ACCT_OUTPUT_GIGAWORDS, u(1)),
                (attr::ACCT_DELAY_TIME, u(30)),
                (attr::ACCT_TERMINATE_CAUSE, u(1)),
                (attr::FRAMED_IP_ADDRESS, vec![10, 1, 2, 3]),
            ],
        );
        let (_, r) = key_of(&bytes, arrival);
        assert_eq!(r.status, AcctStatus::Stop);
        assert_eq!(r.input_octets, Some((2u64 << 32) + 10));
        assert_eq!(r.output_octets, Some(1u64 << 32));
        assert_eq!(
            r.event_time,
            Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap()
        );
        assert_eq!(r.terminate_cause.as_deref(), Some("User-Request"));
        assert_eq!(r.framed_ip.as_deref(), Some("10.1.2.3"));
        let with_ts = request(
            1,
            &[
                (attr::ACCT_STATUS_TYPE, u(1)),
                (attr::EVENT_TIMESTAMP, u(1_700_000_000)),
            ],
        );
        let (_, r) = key_of(&with_ts, arrival);
        assert_eq!(r.event_time.timestamp(), 1_700_000_000);
        assert_eq!(fold_gigawords(None, None), None);
        assert_eq!(
            fold_gigawords(Some(u32::MAX), Some(u32::MAX)),
            Some(u64::MAX)
        );
        // Unknown statuses are not recorded; a missing one is malformed.
        let p = request(1, &[(attr::ACCT_STATUS_TYPE, u(9))]);
        assert_eq!(
            record_of(
                &Packet::decode(&p).unwrap(),
                "::1".parse().unwrap(),
                arrival
            ),
            Ok(None)
        );
        let p = request(1, &[]);
        assert!(record_of(
            &Packet::decode(&p).unwrap(),
            "::1".parse().unwrap(),
            arrival
        )
        .is_err());
    }
}
