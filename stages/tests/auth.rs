//! The auth stage against real DNS: Debian's rbldnsd serving SPF, DKIM and DMARC TXT
//! records from a `generic` zone on a free loopback port, and messages signed here
//! with a fresh Ed25519 key.

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use mail_auth::{
    common::{crypto::Ed25519Key, headers::HeaderWriter},
    dkim::DkimSigner,
};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived, Tag};
use pampa_stages::{
    auth::{Auth, AuthConfig},
    metrics::STAGE_ERRORS_TOTAL,
    Body, Stage,
};

const RBLDNSD: &str = "/usr/sbin/rbldnsd";

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

// ------------------------------------------------------------------ rbldnsd --

/// rbldnsd in the foreground, killed on drop.
struct Rbldnsd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rbldnsd {
    fn start(zone: &str) -> Rbldnsd {
        assert!(
            Path::new(RBLDNSD).exists(),
            "{RBLDNSD} is missing: install Debian's rbldnsd package (ops/test.sh does)"
        );
        // rbldnsd drops to `nobody` before it reads the zone, so the directory and file
        // must be world-readable.
        let dir = tempfile::Builder::new()
            .prefix("pampa-auth-dns")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let path = dir.path().join("auth.zone");
        fs::write(&path, zone).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let log_path = dir.path().join("rbldnsd.log");
        // The port is free when asked, but another process may take it before rbldnsd
        // binds; rbldnsd then exits at once, and we try another.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(RBLDNSD)
                .args(["-n", "-u", "nobody", "-c", "0", "-t", "5"])
                .args(["-b", &format!("127.0.0.1/{port}"), "-w"])
                .arg(dir.path())
                .arg("test:generic:auth.zone")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {RBLDNSD}: {e}"));
            let log = || fs::read_to_string(&log_path).unwrap_or_default();
            match wait_until_it_answers(&mut child, addr) {
                Up::Answering => {
                    return Rbldnsd {
                        child,
                        addr,
                        _dir: dir,
                    }
                }
                Up::Exited => eprintln!("rbldnsd on port {port} exited at start:\n{}", log()),
                Up::Silent => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("rbldnsd on port {port} did not answer in 10 s:\n{}", log());
                }
            }
        }
        panic!("rbldnsd exited at start five times; see its logs above");
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Up {
    Answering,
    Exited,
    Silent,
}

/// Polls with a real TXT query for the SPF record until rbldnsd answers it, or it
/// exits, or 10 s pass.
fn wait_until_it_answers(child: &mut Child, addr: SocketAddr) -> Up {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let query = txt_query(0x5a5a, "auth.test");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Up::Exited;
        }
        let _ = socket.send_to(&query, addr);
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            // Our id, a response, rcode NOERROR, and an answer.
            if len >= 12
                && buf[..2] == [0x5a, 0x5a]
                && buf[2] & 0x80 != 0
                && buf[3] & 0x0f == 0
                && buf[7] > 0
            {
                return Up::Answering;
            }
        }
    }
    Up::Silent
}

/// A DNS query for the TXT records of `name`, written by hand so that waiting for the
/// server does not depend on the resolver under test.
fn txt_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

// ------------------------------------------------------------------ metrics --

/// Counters by `name{label="value",…}` (labels sorted).
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<BTreeMap<String, f64>>>);

struct Slot {
    key: String,
    store: Recorded,
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        *self
            .store
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.store
            .0
            .lock()
            .unwrap()
            .insert(self.key.clone(), value as f64);
    }
}

impl Recorded {
    fn get(&self, key: &str) -> f64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        labels.sort();
        Counter::from_arc(Arc::new(Slot {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: self.clone(),
        }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `f` on a single-threaded runtime with a recorder on this thread only (tests
/// run in parallel), and returns what it recorded.
fn run<T>(f: impl std::future::Future<Output = T>) -> (T, Recorded) {
    let recorded = Recorded::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorded, || runtime.block_on(f));
    (out, recorded)
}

fn errors(kind: &str) -> String {
    format!("{STAGE_ERRORS_TOTAL}{{kind=\"{kind}\",stage=\"auth\"}}")
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
    let server = Rbldnsd::start(&zone(&public));
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
    let server = Rbldnsd::start(&zone(&public));
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
    let server = Rbldnsd::start(&zone(&public));
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
