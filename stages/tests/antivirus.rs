//! The antivirus stage against a real clamd, started on a free port with the project's
//! test database (`ops/clamav/testdb/`), because this machine cannot download
//! ClamAV's official signatures.
//!
//! Needs clamd: `$PAMPA_CLAMD`, else `/usr/sbin/clamd` (Debian's `clamav-daemon`,
//! which `ops/test.sh` installs). Without it these tests fail rather than skip: a
//! skipped antivirus test would pass a machine that cannot scan.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived, Tag};
use pampa_stages::{
    antivirus::{Antivirus, AntivirusConfig, AntivirusError, NOT_SCANNED_TOO_LARGE},
    Body, Findings, Stage, StageError,
};

/// What the test database reports. clamd appends `.UNOFFICIAL` to every signature
/// that does not come from a database signed by Cisco-Talos.
const EICAR_SIGNATURE: &str = "Eicar-Test-Signature.UNOFFICIAL";
const SAMPLE_SIGNATURE: &str = "Pampa.Test.Sample.UNOFFICIAL";
/// The string `Pampa.Test.Sample` matches (see ops/clamav/README.md).
const SAMPLE_MARKER: &str = "PAMPA-AV-TEST-SAMPLE-7f3c";

/// The EICAR test file, built from two halves so that this source file is not itself
/// flagged by a virus scanner on a developer's machine.
fn eicar() -> String {
    [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn clamd_binary() -> PathBuf {
    let path = std::env::var_os("PAMPA_CLAMD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/clamd"));
    assert!(
        path.is_file(),
        "clamd not found at {} (install clamav-daemon, or set PAMPA_CLAMD)",
        path.display()
    );
    path
}

fn test_db() -> PathBuf {
    std::env::var_os("PAMPA_CLAMAV_TEST_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("ops/clamav/testdb"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A clamd started by `ops/clamav/start-clamd.sh`, killed on drop.
struct Clamd {
    child: Option<Child>,
    workdir: PathBuf,
}

impl Clamd {
    fn start(port: u16, workdir: &Path) -> Clamd {
        let out = fs::File::create(workdir.join("start-clamd.out")).expect("create output file");
        let err = out.try_clone().expect("clone output file");
        let child = Command::new("bash")
            .arg(repo().join("ops/clamav/start-clamd.sh"))
            .arg(test_db())
            .arg(port.to_string())
            .arg(workdir)
            .env("PAMPA_CLAMD", clamd_binary())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run ops/clamav/start-clamd.sh");
        Clamd {
            child: Some(child),
            workdir: workdir.to_owned(),
        }
    }

    /// Waits until clamd answers PING with PONG: it opens its port only once the
    /// database is loaded, which takes seconds.
    async fn wait_ready(&mut self, av: &Antivirus) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let last = match av.ping().await {
                Ok(()) => return,
                Err(e) => e,
            };
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "clamd exited with {status} before answering PING\n{}",
                        self.logs()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "clamd did not answer PING within 120s (last: {last})\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The script execs clamd, so this is clamd itself.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.workdir.join(name)).unwrap_or_default();
        format!(
            "--- start-clamd.out\n{}\n--- clamd.log\n{}",
            read("start-clamd.out"),
            read("clamd.log")
        )
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(port: u16) -> AntivirusConfig {
    AntivirusConfig {
        clamd: format!("tcp://127.0.0.1:{port}"),
        timeout: Duration::from_secs(30),
        ..AntivirusConfig::default()
    }
}

fn analysis() -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: "0190a1b2-test".into(),
        client: ClientInfo {
            ip: "192.0.2.10".into(),
            helo: "client.example".into(),
            tls: false,
        },
        mail_from: "sender@example.org".into(),
        recipients: vec!["user@example.net".into(), "other@example.net".into()],
        blob: BlobRef {
            key: "test".into(),
            size: 0,
            sha256: String::new(),
        },
        header_message_id: Some("<test@example.org>".into()),
        received_by: "mx.example.net".into(),
        received_at: Utc::now(),
        levels: Vec::new(),
    })
}

fn message(body: &str) -> Body {
    Body::new(
        format!(
            "From: sender@example.org\r\nTo: user@example.net\r\nSubject: test\r\n\
             Message-ID: <test@example.org>\r\n\r\n{body}\r\n"
        )
        .into_bytes(),
    )
}

/// The EICAR file as a base64 attachment, the way it arrives in real mail: only
/// clamd's MIME parser, not a byte match on the raw message, can find it.
fn eicar_attachment() -> Body {
    let b64 = base64(eicar().as_bytes());
    Body::new(
        format!(
            "From: sender@example.org\r\nTo: user@example.net\r\nSubject: invoice\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
             --b1\r\nContent-Type: application/octet-stream; name=\"eicar.com\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n\
             {b64}\r\n--b1--\r\n"
        )
        .into_bytes(),
    )
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
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

fn virus_tags(findings: &Findings) -> Vec<&str> {
    findings
        .tags
        .iter()
        .filter(|t| t.is_virus())
        .map(|t| t.name.as_str())
        .collect()
}

fn transient(result: Result<Findings, StageError>) -> AntivirusError {
    match result {
        Err(StageError::Transient(e)) => *e
            .downcast::<AntivirusError>()
            .expect("an AntivirusError inside"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn clamd_finds_the_test_signatures_and_passes_clean_mail() {
    let workdir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut clamd = Clamd::start(port, workdir.path());
    let av = Antivirus::new(config(port)).expect("valid config");
    clamd.wait_ready(&av).await;
    let analysis = analysis();

    // EICAR inline in the text.
    let findings = av
        .process(
            &analysis,
            &message(&format!("Hello,\r\n{}\r\nbye", eicar())),
        )
        .await
        .expect("scan");
    assert_eq!(
        findings.tags,
        vec![Tag::new(
            format!("VIRUS:{EICAR_SIGNATURE}"),
            format!("clamd: stream: {EICAR_SIGNATURE} FOUND")
        )],
        "{}",
        clamd.logs()
    );
    assert!(
        findings.recipient_tags.is_empty(),
        "a virus is a message-level fact"
    );

    // EICAR as a base64 attachment.
    let findings = av
        .process(&analysis, &eicar_attachment())
        .await
        .expect("scan");
    assert_eq!(virus_tags(&findings), [format!("VIRUS:{EICAR_SIGNATURE}")]);

    // The project's own sample.
    let findings = av
        .process(&analysis, &message(&format!("marker: {SAMPLE_MARKER} end")))
        .await
        .expect("scan");
    assert_eq!(virus_tags(&findings), [format!("VIRUS:{SAMPLE_SIGNATURE}")]);

    // Clean mail, including near misses of both signatures.
    for body in [
        "Hello, nothing to see here.".to_owned(),
        SAMPLE_MARKER.replace("7f3c", "7f3d"),
        eicar().replace("EICAR", "EICAX"),
    ] {
        let findings = av.process(&analysis, &message(&body)).await.expect("scan");
        assert_eq!(findings, Findings::default(), "{body}");
    }

    // Larger than max_scan_bytes: passed on unscanned, with a tag saying so, even
    // though it carries EICAR.
    let small = Antivirus::new(AntivirusConfig {
        max_scan_bytes: 1024,
        ..config(port)
    })
    .expect("valid config");
    let big = message(&format!("{}\r\n{}", eicar(), "x".repeat(2000)));
    let size = big.raw().len();
    let findings = small.process(&analysis, &big).await.expect("skip");
    assert_eq!(
        findings.tags,
        vec![Tag::new(
            NOT_SCANNED_TOO_LARGE,
            format!("{size} bytes, more than max_scan_bytes 1024")
        )]
    );

    // A max_scan_bytes above clamd's StreamMaxLength (25M in start-clamd.sh): clamd
    // stops reading and answers ERROR, which must come through as a clamd error (not
    // as the broken pipe our writes then hit), so the runner retries it.
    let misconfigured = Antivirus::new(AntivirusConfig {
        max_scan_bytes: 64 * 1024 * 1024,
        ..config(port)
    })
    .expect("valid config");
    let huge = Body::new(vec![b'a'; 25 * 1024 * 1024 + 1]);
    let error = transient(misconfigured.process(&analysis, &huge).await);
    assert!(
        matches!(&error, AntivirusError::Clamd { reply } if reply.contains("INSTREAM size limit exceeded")),
        "{error:?}"
    );
    assert_eq!(error.kind(), "clamd_error");
    // Exactly StreamMaxLength is still scanned.
    let limit = Body::new(vec![b'a'; 25 * 1024 * 1024]);
    let findings = misconfigured
        .process(&analysis, &limit)
        .await
        .expect("scan");
    assert_eq!(findings, Findings::default());
}

#[tokio::test]
async fn a_dead_clamd_is_a_transient_error_until_it_is_back() {
    let workdir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut clamd = Clamd::start(port, workdir.path());
    let av = Antivirus::new(config(port)).expect("valid config");
    clamd.wait_ready(&av).await;
    let analysis = analysis();
    let infected = message(&eicar());

    let findings = av.process(&analysis, &infected).await.expect("scan");
    assert_eq!(virus_tags(&findings), [format!("VIRUS:{EICAR_SIGNATURE}")]);

    clamd.kill();
    let error = transient(av.process(&analysis, &infected).await);
    assert_eq!(error.kind(), "unreachable", "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&format!("tcp://127.0.0.1:{port}")),
        "{error}"
    );
    let ping = av.ping().await.expect_err("ping a dead clamd");
    assert_eq!(ping.kind(), "unreachable", "{ping:?}");

    // Restarted on the same port, the same stage scans again: every scan opens a new
    // connection, so there is nothing stale to reconnect.
    let mut clamd = Clamd::start(port, workdir.path());
    clamd.wait_ready(&av).await;
    let findings = av.process(&analysis, &infected).await.expect("scan");
    assert_eq!(virus_tags(&findings), [format!("VIRUS:{EICAR_SIGNATURE}")]);
    av.ping().await.expect("ping");
}
