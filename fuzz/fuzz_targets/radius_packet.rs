//! The RADIUS decoder and everything the server reads from a datagram before it trusts
//! it: `Packet::decode`, every attribute accessor, the accounting record and its dedup
//! key, User-Password recovery, CHAP and MS-CHAPv2 parsing, and the authenticator and
//! Message-Authenticator checks, with a fixed secret.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use pampa_radius::{
    acct,
    crypto::{self, MessageAuthenticator},
    mschap,
    packet::{attr, Packet},
};

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    // The decoder's invariants: what it hands out lies inside the packet.
    let bytes = packet.bytes();
    assert!(bytes.len() >= 20 && bytes.len() <= data.len());
    for a in packet.attributes() {
        assert!(a.value.len() <= 253);
        assert!(a.offset + 2 + a.value.len() <= bytes.len());
        assert_eq!(&bytes[a.offset + 2..a.offset + 2 + a.value.len()], a.value);
        let _ = packet.text(a.typ);
        let _ = packet.text_lossy(a.typ);
        let _ = packet.u32(a.typ);
        let _ = packet.ipv4(a.typ);
    }
    let _ = packet.vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE);
    let _ = packet.vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_CHALLENGE);

    // Accounting: the record, its dedup key and ids.
    let arrival = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let nas = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    if let Ok(Some(record)) = acct::record_of(&packet, nas, arrival) {
        let key = acct::dedup_key(&packet, nas, &record);
        let _ = acct::event_id(&key);
        let _ = acct::session_correlation_id(&record);
    }
    let _ = acct::status_of(&packet);
    let _ = acct::event_time(&packet, arrival);

    // The authenticator checks a server makes before believing anything.
    let ma = crypto::verify_message_authenticator(&packet, SECRET);
    let _ = crypto::verify_accounting_request(&packet, SECRET);
    let _ = crypto::verify_reply(&packet, SECRET, &packet.authenticator);
    let _ = crypto::verify_reply_message_authenticator(&packet, SECRET, &packet.authenticator);
    if ma == MessageAuthenticator::Valid {
        // A valid one must fail under another secret.
        assert_ne!(
            crypto::verify_message_authenticator(&packet, b"other-secret"),
            MessageAuthenticator::Valid
        );
    }

    // Authentication inputs: PAP, CHAP, MS-CHAPv2.
    if let Some(hidden) = packet.get(attr::USER_PASSWORD) {
        if let Some(clear) = crypto::unhide_password(hidden, SECRET, &packet.authenticator) {
            // Hiding what was recovered gives the same bytes back, unless the clear text
            // ended in NULs (which recovery strips).
            if let Ok(again) = crypto::hide_password(&clear, SECRET, &packet.authenticator) {
                if again.len() == hidden.len() {
                    assert_eq!(again, hidden);
                }
            }
        }
    }
    if let Some(chap) = packet.get(attr::CHAP_PASSWORD) {
        let challenge = packet
            .get(attr::CHAP_CHALLENGE)
            .unwrap_or(&packet.authenticator[..]);
        let _ = crypto::verify_chap(chap, b"secret", challenge);
    }
    if let Ok(Some(value)) = packet.vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE) {
        if let Some(response) = mschap::Response::parse(value) {
            let challenge: [u8; 16] = packet
                .vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_CHALLENGE)
                .ok()
                .flatten()
                .and_then(|c| c.try_into().ok())
                .unwrap_or([0; 16]);
            let user = packet.get(attr::USER_NAME).unwrap_or(b"");
            let _ = mschap::verify(&challenge, &response, user, "secret");
        }
    }
});
