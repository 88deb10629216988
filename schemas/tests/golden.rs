//! Golden fixtures: every event type and version, encoded once and kept forever.
//! Old fixtures must keep decoding; run with `PAMPA_BLESS=1` only to add a new one.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use pampa_schemas::{
    decode, decode_auths, decode_head, encode, AccessAcct, AccessAuth, AccessAuths, AcctStatus,
    AuthResult, BlobRef, ClientInfo, CodecError, Decision, DeliveryOutcome, Disposition, Envelope,
    Event, LevelSnapshot, MailAnalysis, MailDelivered, MailFeedback, MailReceived,
    RecipientDelivery, RecipientLevel, Tag, Verdict,
};
use pampa_schemas::{decode_queries, DnsQueries, DnsQuery, DnsTransport, ZoneKind};
use pampa_schemas::{
    AttemptResult, MailHeld, RecipientAttempt, RelayAttempt, RelayFinal, RelayOutcome,
    SubmissionLimited, OUTBOUND_EVENT_TYPE, SUBMITTED_EVENT_TYPE,
};
use serde::{Deserialize, Serialize};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn received() -> Envelope<MailReceived> {
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    Envelope {
        id: "0193a1b2-0000-7000-8000-000000000001".into(),
        event_type: "mail.received".into(),
        schema_version: 1,
        correlation_id: "0193a1b2-0000-7000-8000-000000000001".into(),
        causation_id: None,
        source: "ingest".into(),
        occurred_at: at,
        payload: MailReceived {
            submitted_by: None,
            message_id: "0193a1b2-0000-7000-8000-000000000001".into(),
            client: ClientInfo {
                ip: "192.0.2.10".into(),
                helo: "client.example".into(),
                tls: true,
            },
            mail_from: "sender@example.net".into(),
            recipients: vec!["alice@example.org".into(), "bob@example.org".into()],
            blob: BlobRef {
                key: "0193a1b2-0000-7000-8000-000000000001".into(),
                size: 1234,
                sha256: "ab".repeat(32),
            },
            header_message_id: Some("<abc@example.net>".into()),
            received_by: "mx.example.org".into(),
            received_at: at,
            levels: vec![],
        },
    }
}

fn delivered() -> Envelope<MailDelivered> {
    let parent = received();
    let mut event = Envelope::caused_by(
        &parent,
        "deliver",
        MailDelivered {
            message_id: parent.payload.message_id.clone(),
            deliveries: vec![
                RecipientDelivery {
                    recipient: "alice@example.org".into(),
                    store: "maildir:".into(),
                    folder: "INBOX".into(),
                    location: "/var/mail/example.org/alice/new/1.abc".into(),
                    outcome: DeliveryOutcome::Delivered,
                },
                RecipientDelivery {
                    recipient: "bob@example.org".into(),
                    store: "maildir:".into(),
                    folder: "INBOX".into(),
                    location: String::new(),
                    outcome: DeliveryOutcome::Failed {
                        reason: "disk full".into(),
                    },
                },
            ],
        },
    );
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 1).unwrap();
    event
}

fn check_golden<P: Event + PartialEq + std::fmt::Debug>(name: &str, expected: Envelope<P>) {
    let path = fixture(name);
    if std::env::var_os("PAMPA_BLESS").is_some() && !path.exists() {
        std::fs::write(&path, encode(&expected).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let decoded: Envelope<P> = decode(&bytes).expect("golden fixture decodes");
    assert_eq!(decoded, expected);
    // What today's encoder writes decodes to the same value. (The bytes may differ
    // from the fixture: fields added since then are written too.)
    assert_eq!(decode::<P>(&encode(&expected).unwrap()).unwrap(), expected);
}

#[test]
fn mail_received_v1_decodes() {
    check_golden("mail.received.v1.msgpack", received());
}

#[test]
fn mail_delivered_v1_decodes() {
    check_golden("mail.delivered.v1.msgpack", delivered());
}

/// A try of deliver that left a copy waiting: the `deferred` outcome (added for LMTP
/// stores; readers older than it cannot decode such an event, so deliver is upgraded
/// last, after every reader of `mail.delivered`).
#[test]
fn mail_delivered_v1_with_a_deferred_copy_decodes() {
    let mut event = delivered();
    event.payload.deliveries[1] = RecipientDelivery {
        recipient: "bob@example.org".into(),
        store: "lmtp://10.0.0.5:24".into(),
        folder: "INBOX".into(),
        location: String::new(),
        outcome: DeliveryOutcome::Deferred {
            reason: "452 4.2.2 <bob@example.org> Quota exceeded".into(),
        },
    };
    check_golden("mail.delivered.v1.deferred.msgpack", event);
}

fn submitted() -> Envelope<MailReceived> {
    let mut event = received();
    event.event_type = SUBMITTED_EVENT_TYPE.into();
    event.source = "submission".into();
    event.payload.submitted_by = Some("alice@example.org".into());
    event.payload.mail_from = "alice@example.org".into();
    event.payload.recipients = vec!["friend@remote.example".into()];
    event.payload.levels = vec![RecipientLevel {
        address: "friend@remote.example".into(),
        level: LevelSnapshot {
            name: "outbound".into(),
            cut: Some(5.0),
            discard: None,
        },
    }];
    event
}

#[test]
fn mail_submitted_v1_decodes() {
    check_golden("mail.submitted.v1.msgpack", submitted());
}

#[test]
fn mail_outbound_v1_decodes() {
    let parent = submitted();
    let mut analysis = MailAnalysis::start(parent.payload.clone());
    analysis.score = Some(1.5);
    analysis.stages = vec!["score".into()];
    analysis.recipients[0].decision = Some(Decision {
        disposition: Disposition::Inbox,
        reason: "score 1.5 below the cut of outbound".into(),
    });
    let mut event = Envelope::caused_by_as(&parent, "score", OUTBOUND_EVENT_TYPE, analysis);
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 1).unwrap();
    check_golden("mail.outbound.v1.msgpack", event);
}

fn outbound_history<P: Event>(source: &str, id: &str, payload: P) -> Envelope<P> {
    let parent = submitted();
    Envelope {
        id: id.into(),
        event_type: P::EVENT_TYPE.into(),
        schema_version: P::SCHEMA_VERSION,
        correlation_id: parent.correlation_id.clone(),
        causation_id: Some(parent.id.clone()),
        source: source.into(),
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 2).unwrap(),
        payload,
    }
}

#[test]
fn outbound_events_v1_decode() {
    check_golden(
        "mail.held.v1.msgpack",
        outbound_history(
            "relay",
            "0193a1b2-0000-7000-8000-000000000010",
            MailHeld {
                message_id: "0193a1b2-0000-7000-8000-000000000001".into(),
                submitted_by: "alice@example.org".into(),
                score: Some(12.5),
                reason: "score 12.5 >= cut 5.0 of outbound".into(),
                recipients: vec!["friend@remote.example".into()],
                flagged_now: true,
            },
        ),
    );
    check_golden(
        "mail.relay.attempt.v1.msgpack",
        outbound_history(
            "relay",
            "0193a1b2-0000-7000-8000-000000000011",
            RelayAttempt {
                message_id: "0193a1b2-0000-7000-8000-000000000001".into(),
                domain: "remote.example".into(),
                mx: Some("mx.remote.example".into()),
                tls: true,
                attempt: 2,
                recipients: vec![
                    RecipientAttempt {
                        recipient: "friend@remote.example".into(),
                        result: AttemptResult::Delivered,
                        reply: "250 2.0.0 Ok".into(),
                    },
                    RecipientAttempt {
                        recipient: "gone@remote.example".into(),
                        result: AttemptResult::Bounced,
                        reply: "550 5.1.1 no such user".into(),
                    },
                ],
            },
        ),
    );
    check_golden(
        "mail.relay.final.v1.msgpack",
        outbound_history(
            "relay",
            "0193a1b2-0000-7000-8000-000000000012",
            RelayFinal {
                message_id: "0193a1b2-0000-7000-8000-000000000001".into(),
                recipient: "gone@remote.example".into(),
                outcome: RelayOutcome::Bounced,
                reply: "550 5.1.1 no such user".into(),
                attempts: 2,
                dsn_sent: true,
            },
        ),
    );
    check_golden(
        "mail.submission_limited.v1.msgpack",
        outbound_history(
            "submission",
            "0193a1b2-0000-7000-8000-000000000013",
            SubmissionLimited {
                user: "alice@example.org".into(),
                ip: "192.0.2.10".into(),
                limit: "messages_per_hour".into(),
                allowed_per_hour: 200,
            },
        ),
    );
}

fn scored() -> Envelope<MailAnalysis> {
    let parent = received();
    let mut received = parent.payload.clone();
    received.levels = vec![RecipientLevel {
        address: "alice@example.org".into(),
        level: LevelSnapshot {
            name: "strict".into(),
            cut: Some(3.0),
            discard: Some(8.0),
        },
    }];
    let mut analysis = MailAnalysis::start(received);
    analysis.tags.push(Tag {
        name: "RBL_TEST".into(),
        evidence: "127.0.0.2".into(),
        weight: Some(4.0),
    });
    analysis.recipients[1]
        .tags
        .push(Tag::new("WL_ADDRESS_BOOK", "sender@example.net"));
    analysis.score = Some(4.0);
    analysis.recipients[0].decision = Some(Decision {
        disposition: Disposition::Spam,
        reason: "score 4.0 >= cut 3.0 of strict".into(),
    });
    analysis.recipients[1].decision = Some(Decision {
        disposition: Disposition::Inbox,
        reason: "WL_ADDRESS_BOOK (sender@example.net)".into(),
    });
    analysis.stages = vec!["rbl".into(), "whitelist".into(), "score".into()];
    let mut event = Envelope::caused_by(&parent, "score", analysis);
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 2).unwrap();
    event
}

#[test]
fn mail_scored_v1_decodes() {
    check_golden("mail.scored.v1.msgpack", scored());
}

fn feedback() -> Envelope<MailFeedback> {
    let parent = received();
    let mut event = Envelope::root(
        "0193a1b2-0000-7000-8000-0000000000f1".into(),
        "cli",
        MailFeedback {
            message_id: parent.payload.message_id.clone(),
            user: "alice@example.org".into(),
            verdict: Verdict::Ham,
            origin: "cli".into(),
        },
    );
    event.correlation_id = parent.payload.message_id.clone();
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap();
    event
}

#[test]
fn mail_feedback_v1_decodes() {
    check_golden("mail.feedback.v1.msgpack", feedback());
}

fn access_auth() -> Envelope<AccessAuth> {
    // Version 1's payload is no longer an `Event` of its own: built field by field.
    let id = "0193a1b2-0000-7000-8000-0000000000a1".to_owned();
    let mut event = Envelope {
        correlation_id: id.clone(),
        id,
        event_type: "access.auth".into(),
        schema_version: 1,
        causation_id: None,
        source: "radius".into(),
        occurred_at: Utc::now(),
        payload: AccessAuth {
            user: "alice".into(),
            address: Some("alice@example.org".into()),
            nas_ip: "192.0.2.7".into(),
            nas_identifier: Some("bras-1".into()),
            nas_port: Some(42),
            calling_station_id: Some("02-00-00-00-00-01".into()),
            method: "pap".into(),
            result: AuthResult::Reject,
            reason: "bad password".into(),
            time: None,
        },
    };
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 27, 14, 0, 0).unwrap();
    event
}

/// Version 1 held one decision per event; it reads as a batch of one, timed by the
/// envelope.
#[test]
fn access_auth_v1_decodes_as_a_batch_of_one() {
    let bytes = std::fs::read(fixture("access.auth.v1.msgpack")).unwrap();
    let v1 = access_auth();
    let decoded = decode_auths(&bytes).expect("the v1 fixture decodes");
    assert_eq!(decoded.id, v1.id);
    assert_eq!(decoded.schema_version, AccessAuths::SCHEMA_VERSION);
    let mut expected = v1.payload;
    expected.time = Some(v1.occurred_at);
    assert_eq!(decoded.payload.decisions, vec![expected]);
}

fn access_auths() -> Envelope<AccessAuths> {
    let v1 = access_auth();
    let mut first = v1.payload.clone();
    first.time = Some(v1.occurred_at);
    let mut second = first.clone();
    second.result = AuthResult::Accept;
    second.reason = "password ok".into();
    second.method = "chap".into();
    second.time = Some(v1.occurred_at + chrono::Duration::milliseconds(3));
    let mut event = Envelope::root(
        v1.id.clone(),
        "radius",
        AccessAuths {
            decisions: vec![first, second],
        },
    );
    event.occurred_at = v1.occurred_at;
    event
}

#[test]
fn access_auth_v2_decodes() {
    check_golden("access.auth.v2.msgpack", access_auths());
    let bytes = std::fs::read(fixture("access.auth.v2.msgpack")).unwrap();
    assert_eq!(decode_auths(&bytes).unwrap(), access_auths());
}

fn access_acct() -> Envelope<AccessAcct> {
    let mut event = Envelope::root(
        "0193a1b2-0000-7000-8000-0000000000a2".into(),
        "radius",
        AccessAcct {
            status: AcctStatus::InterimUpdate,
            nas_ip: "192.0.2.7".into(),
            nas_identifier: Some("bras-1".into()),
            nas_port: Some(42),
            user: Some("alice@example.org".into()),
            session_id: Some("5F3A0001".into()),
            framed_ip: Some("198.51.100.9".into()),
            calling_station_id: Some("02-00-00-00-00-01".into()),
            session_time: Some(3600),
            // Above 2^32, so the fixture pins the Gigawords folding as a 64-bit count.
            input_octets: Some(5 * (1 << 32) + 1234),
            output_octets: Some(987_654_321),
            input_packets: Some(4_000_000),
            output_packets: Some(1_000_000),
            terminate_cause: None,
            event_time: Utc.with_ymd_and_hms(2026, 11, 27, 14, 59, 58).unwrap(),
        },
    );
    event.occurred_at = Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).unwrap();
    event
}

#[test]
fn access_acct_v1_decodes() {
    check_golden("access.acct.v1.msgpack", access_acct());
}

fn dns_query() -> Envelope<DnsQuery> {
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 14, 0, 0).unwrap();
    // Version 1's payload is no longer an `Event` of its own: built field by field.
    let id = "0193a1b2-0000-7000-8000-0000000000d1".to_owned();
    let mut event = Envelope {
        correlation_id: id.clone(),
        id,
        event_type: "dns.query".into(),
        schema_version: 1,
        causation_id: None,
        source: "dns".into(),
        occurred_at: at,
        payload: DnsQuery {
            time: at,
            client_ip: "10.1.2.3".into(),
            client_port: 53124,
            transport: DnsTransport::Udp,
            qname: "2.0.0.127.bl.example.net.".into(),
            qtype: "A".into(),
            qclass: "IN".into(),
            rcode: "NOERROR".into(),
            answer_count: 1,
            zone_kind: ZoneKind::Dnsbl,
            latency_us: 41,
            response_size: 78,
            id: Some(4242),
            zone: Some("bl.example.net.".into()),
            truncated: false,
            rate_limited: false,
        },
    };
    event.occurred_at = at;
    event
}

/// Version 1 held one query per event; it reads as a batch of one.
#[test]
fn dns_query_v1_decodes_as_a_batch_of_one() {
    let bytes = std::fs::read(fixture("dns.query.v1.msgpack")).unwrap();
    let v1 = dns_query();
    let decoded = decode_queries(&bytes).expect("the v1 fixture decodes");
    assert_eq!(decoded.id, v1.id);
    assert_eq!(decoded.occurred_at, v1.occurred_at);
    assert_eq!(decoded.schema_version, DnsQueries::SCHEMA_VERSION);
    assert_eq!(decoded.payload.iter().collect::<Vec<_>>(), vec![v1.payload]);
}

fn dns_queries() -> Envelope<DnsQueries> {
    let v1 = dns_query();
    let mut second = v1.payload.clone();
    second.qname = "nope.example.net.".into();
    second.rcode = "NXDOMAIN".into();
    second.transport = DnsTransport::Tcp;
    second.zone_kind = ZoneKind::Authoritative;
    second.zone = None;
    second.id = None;
    second.truncated = true;
    second.time += chrono::Duration::microseconds(1250);
    let mut event = Envelope::root(
        v1.id.clone(),
        "dns",
        [v1.payload, second].into_iter().collect::<DnsQueries>(),
    );
    event.occurred_at = v1.occurred_at;
    event
}

/// Version 2 wrote every column plainly; it reads into today's dictionary columns.
#[test]
fn dns_query_v2_decodes() {
    let mut v2 = dns_queries();
    v2.schema_version = 2;
    check_golden("dns.query.v2.msgpack", v2);
    let bytes = std::fs::read(fixture("dns.query.v2.msgpack")).unwrap();
    let batch = decode_queries(&bytes).unwrap().payload;
    assert_eq!(batch.len(), 2);
    assert_eq!(batch.get(1).unwrap().qname, "nope.example.net.");
}

/// Version 3 stores the repeating columns as dictionaries.
#[test]
fn dns_query_v3_decodes() {
    check_golden("dns.query.v3.msgpack", dns_queries());
    let bytes = std::fs::read(fixture("dns.query.v3.msgpack")).unwrap();
    let batch = decode_queries(&bytes).unwrap().payload;
    assert_eq!(batch.get(1).unwrap().rcode, "NXDOMAIN");
    assert_eq!(batch.qclass.values(), ["IN"], "one class, stored once");
}

/// A column a newer writer adds is skipped by this reader, and a column this reader
/// knows but the writer did not write reads as defaults.
#[test]
fn dns_query_batches_tolerate_missing_and_unknown_columns() {
    #[derive(Serialize)]
    struct Newer {
        time_us: Vec<i64>,
        qname: Vec<String>,
        some_future_column: Vec<u32>,
    }
    let event = Envelope {
        id: "x".into(),
        event_type: "dns.query".into(),
        schema_version: 2,
        correlation_id: "x".into(),
        causation_id: None,
        source: "dns".into(),
        occurred_at: Utc::now(),
        payload: Newer {
            time_us: vec![1, 2],
            qname: vec!["a.".into(), "b.".into()],
            some_future_column: vec![7, 8],
        },
    };
    let bytes = rmp_serde::to_vec_named(&event).unwrap();
    let batch = decode_queries(&bytes).unwrap().payload;
    let queries: Vec<DnsQuery> = batch.iter().collect();
    assert_eq!(queries.len(), 2);
    assert_eq!(queries[1].qname, "b.");
    assert_eq!(queries[1].client_ip, "");
    assert_eq!(queries[1].zone_kind, ZoneKind::None);
}

#[test]
fn an_analysis_travels_under_each_stage_name() {
    let scored = scored();
    let rbl = Envelope::caused_by_as(&received(), "rbl", "mail.rbl", scored.payload.clone());
    let bytes = encode(&rbl).unwrap();
    assert_eq!(
        decode::<MailAnalysis>(&bytes).unwrap().event_type,
        "mail.rbl"
    );
    let recovered = Envelope::caused_by_as(
        &scored,
        "cli",
        pampa_schemas::RECOVERED_EVENT_TYPE,
        scored.payload.clone(),
    );
    assert_eq!(
        decode::<MailAnalysis>(&encode(&recovered).unwrap()).unwrap(),
        recovered
    );
    assert!(decode::<MailAnalysis>(&encode(&received()).unwrap()).is_err());
}

#[test]
fn round_trip() {
    let event = received();
    let bytes = encode(&event).unwrap();
    assert_eq!(decode::<MailReceived>(&bytes).unwrap(), event);
    let head = decode_head(&bytes).unwrap();
    assert_eq!(head.event_type, "mail.received");
    assert_eq!(head.id, event.id);
    let derived = delivered();
    assert_eq!(derived.causation_id.as_deref(), Some(event.id.as_str()));
    assert_eq!(derived.correlation_id, event.correlation_id);
    // Derived ids are deterministic, so a rerun of a stage is deduplicated.
    assert_eq!(
        Envelope::caused_by(&event, "deliver", derived.payload.clone()).id,
        derived.id
    );
    assert_ne!(pampa_schemas::derive_id(&event.id, "rbl"), derived.id);
}

#[test]
fn wrong_type_and_garbage_are_errors() {
    let bytes = encode(&received()).unwrap();
    assert!(matches!(
        decode::<MailDelivered>(&bytes),
        Err(CodecError::WrongType { .. })
    ));
    assert!(decode::<MailReceived>(b"\xc1garbage").is_err());
    assert!(decode::<MailReceived>(&bytes[..bytes.len() / 2]).is_err());
    assert!(decode_head(&[]).is_err());
}

/// A later version of `mail.received` that gained an optional field.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct MailReceivedWithExtra {
    #[serde(flatten)]
    base: MailReceived,
    #[serde(default)]
    spf_result: Option<String>,
}

impl Event for MailReceivedWithExtra {
    const EVENT_TYPE: &'static str = "mail.received";
    const SCHEMA_VERSION: u16 = 1;
}

#[test]
fn an_added_optional_field_still_decodes_the_old_fixture() {
    let bytes = std::fs::read(fixture("mail.received.v1.msgpack")).unwrap();
    let newer: Envelope<MailReceivedWithExtra> = decode(&bytes).expect("old fixture, new reader");
    assert_eq!(newer.payload.base, received().payload);
    assert_eq!(newer.payload.spf_result, None);
    // And the old reader skips the field a newer writer added.
    let mut with_extra = received_shell();
    with_extra.payload.spf_result = Some("pass".into());
    let bytes = encode(&with_extra).unwrap();
    assert_eq!(
        decode::<MailReceived>(&bytes).unwrap().payload,
        received().payload
    );
}

fn received_shell() -> Envelope<MailReceivedWithExtra> {
    let r = received();
    Envelope {
        id: r.id,
        event_type: r.event_type,
        schema_version: r.schema_version,
        correlation_id: r.correlation_id,
        causation_id: r.causation_id,
        source: r.source,
        occurred_at: r.occurred_at,
        payload: MailReceivedWithExtra {
            base: r.payload,
            spf_result: None,
        },
    }
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let mut event = received();
    event.schema_version = 9;
    let bytes = encode(&event).unwrap();
    let err = decode::<MailReceived>(&bytes).unwrap_err();
    assert!(err.to_string().contains("schema version 9"), "{err}");
}
