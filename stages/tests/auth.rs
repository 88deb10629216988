//! The auth stage against real DNS: Debian's rbldnsd serving SPF, DKIM and DMARC TXT
//! records from a `generic` zone on a free loopback port, and messages signed here
//! with a fresh Ed25519 key.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use chrono::Utc;
use mail_auth::{
    common::{crypto::Ed25519Key, headers::HeaderWriter},
    dkim::DkimSigner,
};
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived, Tag};
use pampa_stages::{
    auth::{Auth, AuthConfig},
    Body, Stage,
};

/// The records, relative to the served zone `test`. `auth.test` has everything;
/// `quar.test` only a quarantine policy; `none.test` exists but publishes nothing.
fn zone(dkim_public_key: &str) -> String {
    format!(
        "auth TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
         sel._domainkey.auth TXT \"v=DKIM1; k=ed25519; p={dkim_public_key}\"\n\
         _dmarc.auth TXT \"v=DMARC1; p=reject\"\n\
         _dmarc.quar TXT \"v=DMARC1; p=quarantine\"\n\
         quar A 127.0.0.1\n\
         none A 127.0.0.1\n"
    )
}

mod support;
use support::{run, Rbldnsd, TXT};

/// Serves the auth records as the `generic` zone `test`.
fn rbldnsd(zone: &str) -> Rbldnsd {
    Rbldnsd::start(
        &[("auth.zone", zone)],
        &["test:generic:auth.zone"],
        ("auth.test", TXT),
    )
}

fn errors(kind: &str) -> String {
    support::errors("auth", kind)
}

// ------------------------------------------------------------------ helpers --

/// A signing key and its public half as a DKIM `p=` value.
fn dkim_key() -> (Vec<u8>, String) {
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
    (pkcs8, base64(&public))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn message(from: &str, body: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: b@example.net\r\nSubject: hello\r\n\
         Message-ID: <1@auth.test>\r\n\r\n{body}\r\n"
    )
}

/// `raw` with a DKIM signature of `d=auth.test s=sel` prepended.
fn signed(pkcs8: &[u8], raw: &str) -> String {
    let key = Ed25519Key::from_pkcs8_der(pkcs8).unwrap();
    let signature = DkimSigner::from_key(key)
        .domain("auth.test")
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(raw.as_bytes())
        .unwrap();
    format!("{}{raw}", signature.to_header())
}

fn analysis(ip: &str, mail_from: &str, helo: &str) -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: "m1".into(),
        client: ClientInfo {
            ip: ip.into(),
            helo: helo.into(),
            tls: false,
        },
        mail_from: mail_from.into(),
        recipients: vec!["b@example.net".into()],
        blob: BlobRef {
            key: "m1".into(),
            size: 0,
            sha256: String::new(),
        },
        header_message_id: None,
        received_by: "mx.example.net".into(),
        received_at: Utc::now(),
        levels: Vec::new(),
    })
}

fn stage(server: SocketAddr) -> Auth {
    Auth::new(AuthConfig {
        resolver: Some(server),
        timeout_ms: 3000,
    })
    .unwrap()
}

async fn check(auth: &Auth, ip: &str, mail_from: &str, raw: &str) -> Vec<Tag> {
    auth.process(
        &analysis(ip, mail_from, "client.example"),
        &Body::new(raw.as_bytes().to_vec()),
    )
    .await
    .unwrap()
    .tags
}

fn names(tags: &[Tag]) -> Vec<&str> {
    tags.iter().map(|t| t.name.as_str()).collect()
}

// -------------------------------------------------------------------- tests --

#[test]
fn spf_passes_for_the_published_ip_and_fails_for_another() {
    let (_, public) = dkim_key();
    let server = rbldnsd(&zone(&public));
    let raw = message("a@auth.test", "Hello.");
    let ((pass, fail, null_sender), recorded) = run(async {
        let auth = stage(server.addr);
        let pass = check(&auth, "127.0.0.1", "a@auth.test", &raw).await;
        let fail = check(&auth, "127.0.0.2", "a@auth.test", &raw).await;
        // A bounce: the HELO identity is checked instead.
        let null_sender = auth
            .process(
                &analysis("127.0.0.1", "", "auth.test"),
                &Body::new(raw.as_bytes().to_vec()),
            )
            .await
            .unwrap()
            .tags;
        (pass, fail, null_sender)
    });
    assert_eq!(
        names(&pass),
        ["SPF_PASS", "DKIM_NONE", "DMARC_PASS"],
        "{pass:?}"
    );
    assert_eq!(
        pass[0].evidence,
        "mail from a@auth.test, client 127.0.0.1: pass for auth.test"
    );
    assert!(
        pass[2].evidence.starts_with("From auth.test: pass"),
        "{pass:?}"
    );
    assert_eq!(
        names(&fail),
        ["SPF_FAIL", "DKIM_NONE", "DMARC_FAIL_REJECT"],
        "{fail:?}"
    );
    assert!(fail[2].evidence.contains("p=reject"), "{fail:?}");
    assert_eq!(names(&null_sender)[0], "SPF_PASS", "{null_sender:?}");
    assert!(
        null_sender[0]
            .evidence
            .starts_with("helo auth.test (null sender)"),
        "{null_sender:?}"
    );
    assert_eq!(recorded.get(&errors("spf_temperror")), 0.0);
}

#[test]
fn dkim_signatures_verify_until_the_body_is_altered() {
    let (pkcs8, public) = dkim_key();
    let server = rbldnsd(&zone(&public));
    let good = signed(&pkcs8, &message("a@auth.test", "Hello."));
    let altered = good.replace("Hello.", "Hello, altered.");
    let ((valid, invalid), _) = run(async {
        let auth = stage(server.addr);
        // The envelope sender is elsewhere, so only DKIM can align with From.
        let valid = check(&auth, "127.0.0.2", "bounce@none.test", &good).await;
        let invalid = check(&auth, "127.0.0.2", "bounce@none.test", &altered).await;
        (valid, invalid)
    });
    assert_eq!(
        names(&valid),
        ["SPF_NONE", "DKIM_VALID", "DMARC_PASS"],
        "{valid:?}"
    );
    assert_eq!(valid[1].evidence, "d=auth.test s=sel: pass");
    assert!(valid[2].evidence.contains("dkim aligned pass"), "{valid:?}");
    assert_eq!(
        names(&invalid),
        ["SPF_NONE", "DKIM_INVALID", "DMARC_FAIL_REJECT"],
        "{invalid:?}"
    );
    assert!(
        // mail-auth reports a body hash mismatch as DKIM "neutral" (RFC 6376 §6.3).
        invalid[1]
            .evidence
            .starts_with("d=auth.test s=sel: neutral")
            && invalid[1].evidence.contains("body hash does not match"),
        "{invalid:?}"
    );
}

#[test]
fn domains_without_records_give_none_and_policies_are_reported() {
    let (_, public) = dkim_key();
    let server = rbldnsd(&zone(&public));
    let ((none, quarantine), recorded) = run(async {
        let auth = stage(server.addr);
        let none = check(
            &auth,
            "127.0.0.1",
            "a@none.test",
            &message("a@none.test", "Hi."),
        )
        .await;
        let quarantine = check(
            &auth,
            "127.0.0.1",
            "a@none.test",
            &message("a@quar.test", "Hi."),
        )
        .await;
        (none, quarantine)
    });
    assert_eq!(
        names(&none),
        ["SPF_NONE", "DKIM_NONE", "DMARC_NONE"],
        "{none:?}"
    );
    assert_eq!(none[2].evidence, "From none.test: no DMARC record");
    assert_eq!(
        names(&quarantine),
        ["SPF_NONE", "DKIM_NONE", "DMARC_FAIL_QUARANTINE"],
        "{quarantine:?}"
    );
    for kind in ["spf_temperror", "dkim_temperror", "dmarc_temperror"] {
        assert_eq!(recorded.get(&errors(kind)), 0.0, "{kind}");
    }
}

#[test]
fn a_black_holed_resolver_gives_temperror_tags_within_the_timeout() {
    // Bound and never read: queries vanish, as when a resolver is down behind a
    // firewall that drops packets.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout_ms = 400;
    let (pkcs8, _) = dkim_key();
    let raw = signed(&pkcs8, &message("a@auth.test", "Hello."));
    let ((tags, elapsed), recorded) = run(async {
        let auth = Auth::new(AuthConfig {
            resolver: Some(hole.local_addr().unwrap()),
            timeout_ms,
        })
        .unwrap();
        let start = Instant::now();
        let tags = check(&auth, "127.0.0.1", "a@auth.test", &raw).await;
        (tags, start.elapsed())
    });
    assert_eq!(
        names(&tags),
        ["SPF_TEMPERROR", "DKIM_TEMPERROR", "DMARC_TEMPERROR"],
        "{tags:?}"
    );
    // One budget for all three checks; the margin is for a slow machine.
    assert!(
        elapsed < Duration::from_millis(timeout_ms + 300),
        "took {elapsed:?}"
    );
    for kind in ["spf_temperror", "dkim_temperror", "dmarc_temperror"] {
        assert_eq!(recorded.get(&errors(kind)), 1.0, "{kind}");
    }
    drop(hole);
}

#[test]
fn config_rejects_unknown_fields_and_a_zero_timeout() {
    let config: AuthConfig = toml::from_str("resolver = \"127.0.0.1:53\"").unwrap();
    assert_eq!(config.timeout_ms, AuthConfig::default().timeout_ms);
    assert!(toml::from_str::<AuthConfig>("resolvers = []").is_err());
    assert!(Auth::new(AuthConfig {
        resolver: Some(SocketAddr::from(([127, 0, 0, 1], 53))),
        timeout_ms: 0,
    })
    .is_err());
}
