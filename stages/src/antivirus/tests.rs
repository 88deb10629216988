//! Reply and config parsing, and the stage against a fake clamd that speaks the
//! INSTREAM framing (the real clamd is exercised in `stages/tests/antivirus.rs`).

use std::{net::SocketAddr, time::Duration};

use chrono::Utc;
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

use super::clamd::{parse_reply, Detection, ScanReply};
use super::*;

// ------------------------------------------------------------------ replies --

fn found(signature: &str) -> Detection {
    Detection {
        signature: signature.to_owned(),
        reply: format!("stream: {signature} FOUND"),
    }
}

#[test]
fn ok_is_clean() {
    assert_eq!(parse_reply(b"stream: OK\0").unwrap(), ScanReply::Clean);
}

#[test]
fn found_names_the_signature() {
    assert_eq!(
        parse_reply(b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0").unwrap(),
        ScanReply::Infected(vec![found("Eicar-Test-Signature.UNOFFICIAL")])
    );
}

#[test]
fn all_match_scan_reports_every_signature_once() {
    let reply = b"stream: A.One FOUND\0stream: B.Two FOUND\0stream: A.One FOUND\0";
    assert_eq!(
        parse_reply(reply).unwrap(),
        ScanReply::Infected(vec![found("A.One"), found("B.Two")])
    );
}

#[test]
fn newline_terminated_and_session_numbered_replies_parse() {
    assert_eq!(parse_reply(b"stream: OK\n").unwrap(), ScanReply::Clean);
    assert_eq!(
        parse_reply(b"1: stream: Win.Test.EICAR_HDB-1 FOUND\0").unwrap(),
        ScanReply::Infected(vec![Detection {
            signature: "Win.Test.EICAR_HDB-1".into(),
            reply: "1: stream: Win.Test.EICAR_HDB-1 FOUND".into(),
        }])
    );
}

#[test]
fn error_replies_are_clamd_errors() {
    let e = parse_reply(b"INSTREAM size limit exceeded. ERROR\0").unwrap_err();
    assert!(
        matches!(&e, AntivirusError::Clamd { reply } if reply == "INSTREAM size limit exceeded. ERROR"),
        "{e:?}"
    );
    assert_eq!(e.kind(), "clamd_error");
    assert_eq!(
        e.to_string(),
        "clamd answered an error: INSTREAM size limit exceeded. ERROR"
    );
    // An error anywhere means no verdict, even after a FOUND.
    let e = parse_reply(b"stream: X FOUND\0stream: Can't allocate memory ERROR\0").unwrap_err();
    assert!(matches!(e, AntivirusError::Clamd { .. }), "{e:?}");
}

#[test]
fn anything_else_is_unexpected() {
    for reply in [
        &b""[..],
        b"\0",
        b"PONG\0",
        b"UNKNOWN COMMAND\0",
        b"stream: FOUND\0",
        b"stream: two words FOUND\0",
        b"stream: MAYBE\0",
    ] {
        let e = parse_reply(reply).unwrap_err();
        assert!(
            matches!(e, AntivirusError::UnexpectedReply { .. }),
            "{:?}: {e:?}",
            String::from_utf8_lossy(reply)
        );
        assert_eq!(e.kind(), "clamd_error");
    }
}

// ------------------------------------------------------------------- config --

fn parse_config(text: &str) -> Result<AntivirusConfig, toml::de::Error> {
    #[derive(serde::Deserialize)]
    struct Stages {
        antivirus: AntivirusConfig,
    }
    #[derive(serde::Deserialize)]
    struct File {
        stages: Stages,
    }
    toml::from_str::<File>(text).map(|f| f.stages.antivirus)
}

#[test]
fn the_documented_section_parses() {
    let config = parse_config(
        r#"
        [stages.antivirus]
        clamd = "unix:///run/clamav/clamd.ctl"
        timeout = "1m 30s"
        max_scan_bytes = 10485760
        oversize = "tempfail"
        "#,
    )
    .unwrap();
    assert_eq!(
        config,
        AntivirusConfig {
            clamd: "unix:///run/clamav/clamd.ctl".into(),
            timeout: Duration::from_secs(90),
            max_scan_bytes: 10 * 1024 * 1024,
            oversize: Oversize::Tempfail,
        }
    );
    let av = Antivirus::new(config).unwrap();
    assert_eq!(
        av.address(),
        &ClamdAddress::Unix("/run/clamav/clamd.ctl".into())
    );
}

#[test]
fn every_key_has_a_default() {
    let config = parse_config("[stages.antivirus]\n").unwrap();
    assert_eq!(config, AntivirusConfig::default());
    assert_eq!(config.clamd, "tcp://127.0.0.1:3310");
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.max_scan_bytes, 26_214_400);
    assert_eq!(config.oversize, Oversize::Skip);
    Antivirus::new(config).unwrap();
}

#[test]
fn unknown_keys_and_values_are_refused() {
    let e = parse_config("[stages.antivirus]\nclamd_addr = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("clamd_addr"), "{e}");
    let e = parse_config("[stages.antivirus]\noversize = \"reject\"\n").unwrap_err();
    assert!(e.to_string().contains("reject"), "{e}");
    assert!(parse_config("[stages.antivirus]\ntimeout = \"soon\"\n").is_err());
}

#[test]
fn addresses_parse_and_print_back() {
    for (text, parsed) in [
        (
            "tcp://127.0.0.1:3310",
            ClamdAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 3310,
            },
        ),
        (
            "tcp://clamd.internal:3310",
            ClamdAddress::Tcp {
                host: "clamd.internal".into(),
                port: 3310,
            },
        ),
        (
            "tcp://[::1]:3310",
            ClamdAddress::Tcp {
                host: "::1".into(),
                port: 3310,
            },
        ),
        (
            "unix:///run/clamav/clamd.ctl",
            ClamdAddress::Unix("/run/clamav/clamd.ctl".into()),
        ),
    ] {
        let address: ClamdAddress = text.parse().unwrap();
        assert_eq!(address, parsed);
        assert_eq!(address.to_string(), text);
    }
}

#[test]
fn bad_addresses_are_startup_errors() {
    for text in [
        "127.0.0.1:3310",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:99999",
        "tcp://:3310",
        "tcp://::1:3310",
        "tcp://host:3310/path",
        "unix://run/clamav/clamd.ctl",
        "http://127.0.0.1:3310",
        "",
    ] {
        let config = AntivirusConfig {
            clamd: text.into(),
            ..AntivirusConfig::default()
        };
        let e = Antivirus::new(config).unwrap_err();
        assert!(
            matches!(e, AntivirusError::BadAddress { .. }),
            "{text}: {e:?}"
        );
        let message = e.to_string();
        assert!(message.contains(&format!("{text:?}")), "{message}");
        assert!(
            message.starts_with(char::is_lowercase),
            "messages are lowercase: {message}"
        );
    }
}

#[test]
fn zero_limits_are_startup_errors() {
    let e = Antivirus::new(AntivirusConfig {
        timeout: Duration::ZERO,
        ..AntivirusConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
    let e = Antivirus::new(AntivirusConfig {
        max_scan_bytes: 0,
        ..AntivirusConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("max_scan_bytes"), "{e}");
}

// --------------------------------------------------------------- fake clamd --

/// What the fake clamd does once it has read a whole command.
#[derive(Clone, Copy)]
enum Fake {
    /// Answers with these bytes and closes.
    Reply(&'static [u8]),
    /// Never answers.
    Hang,
    /// Closes without a word.
    Close,
}

/// A clamd stand-in on a free port. It checks the framing strictly (a command ends
/// with NUL; INSTREAM chunks are length-prefixed and end with a zero length) and sends
/// each reassembled stream (or `b"PING"`) down the channel.
async fn fake_clamd(fake: Fake) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let mut command = Vec::new();
                conn.read_until(0, &mut command).await.unwrap();
                let received = match command.as_slice() {
                    b"zPING\0" => b"PING".to_vec(),
                    b"zINSTREAM\0" => {
                        let mut data = Vec::new();
                        loop {
                            let len = conn.read_u32().await.unwrap() as usize;
                            if len == 0 {
                                break;
                            }
                            assert!(len <= 64 * 1024, "chunk of {len} bytes");
                            let start = data.len();
                            data.resize(start + len, 0);
                            conn.read_exact(&mut data[start..]).await.unwrap();
                        }
                        data
                    }
                    other => panic!("unexpected command {:?}", String::from_utf8_lossy(other)),
                };
                let _ = tx.send(received);
                match fake {
                    Fake::Reply(reply) => {
                        conn.get_mut().write_all(reply).await.unwrap();
                        conn.get_mut().shutdown().await.unwrap();
                    }
                    Fake::Hang => std::future::pending::<()>().await,
                    Fake::Close => {}
                }
            });
        }
    });
    (addr, rx)
}

fn stage_at(addr: SocketAddr) -> Antivirus {
    Antivirus::new(AntivirusConfig {
        clamd: format!("tcp://{addr}"),
        timeout: Duration::from_millis(500),
        ..AntivirusConfig::default()
    })
    .unwrap()
}

fn analysis() -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: "m1".into(),
        client: ClientInfo {
            ip: "192.0.2.1".into(),
            helo: "client.example".into(),
            tls: false,
        },
        mail_from: "a@example.org".into(),
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

/// A body over several chunks, so the framing is exercised.
fn big_body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

fn transient(e: StageError) -> AntivirusError {
    match e {
        StageError::Transient(e) => *e
            .downcast::<AntivirusError>()
            .expect("an AntivirusError inside"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// Runs `f` on a fresh single-threaded runtime with a Prometheus recorder installed on
/// this thread only (tests run in parallel), and returns the rendered metrics too.
fn with_metrics<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = ::metrics::with_local_recorder(&recorder, || runtime.block_on(f));
    (out, handle.render())
}

#[test]
fn a_clean_stream_arrives_whole_and_adds_no_tag() {
    let ((findings, received), metrics) = with_metrics(async {
        let (addr, mut rx) = fake_clamd(Fake::Reply(b"stream: OK\0")).await;
        let findings = stage_at(addr)
            .process(&analysis(), &Body::new(big_body()))
            .await
            .unwrap();
        (findings, rx.recv().await.unwrap())
    });
    assert_eq!(findings, Findings::default());
    assert!(received == big_body(), "the stream was reassembled wrongly");
    assert!(metrics.contains(&format!("{CLAMD_UP} 1")), "{metrics}");
}

#[test]
fn an_empty_body_is_still_a_valid_stream() {
    let (findings, _) = with_metrics(async {
        let (addr, _rx) = fake_clamd(Fake::Reply(b"stream: OK\0")).await;
        stage_at(addr)
            .process(&analysis(), &Body::new(Vec::new()))
            .await
            .unwrap()
    });
    assert_eq!(findings, Findings::default());
}

#[test]
fn a_virus_is_a_message_tag_with_clamd_reply_as_evidence() {
    let (findings, metrics) = with_metrics(async {
        let (addr, _rx) = fake_clamd(Fake::Reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0")).await;
        stage_at(addr)
            .process(&analysis(), &Body::new(b"x".to_vec()))
            .await
            .unwrap()
    });
    assert_eq!(
        findings.tags,
        vec![Tag::new(
            "VIRUS:Win.Test.EICAR_HDB-1",
            "clamd: stream: Win.Test.EICAR_HDB-1 FOUND"
        )]
    );
    assert!(findings.tags[0].is_virus());
    assert!(findings.recipient_tags.is_empty() && findings.verdict.is_none());
    assert!(metrics.contains(&format!("{CLAMD_UP} 1")), "{metrics}");
}

#[test]
fn a_clamd_error_is_transient_and_counted() {
    let (error, metrics) = with_metrics(async {
        let (addr, _rx) = fake_clamd(Fake::Reply(b"INSTREAM size limit exceeded. ERROR\0")).await;
        stage_at(addr)
            .process(&analysis(), &Body::new(b"x".to_vec()))
            .await
            .unwrap_err()
    });
    assert_eq!(transient(error).kind(), "clamd_error");
    assert!(
        metrics.contains(r#"pampa_stage_errors_total{stage="antivirus",kind="clamd_error"} 1"#),
        "{metrics}"
    );
    // clamd answered, so it is up.
    assert!(metrics.contains(&format!("{CLAMD_UP} 1")), "{metrics}");
}

#[test]
fn a_silent_clamd_times_out() {
    let (error, metrics) = with_metrics(async {
        let (addr, _rx) = fake_clamd(Fake::Hang).await;
        stage_at(addr)
            .process(&analysis(), &Body::new(b"x".to_vec()))
            .await
            .unwrap_err()
    });
    let error = transient(error);
    assert!(matches!(error, AntivirusError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("500ms"), "{error}");
    assert!(
        metrics.contains(r#"pampa_stage_errors_total{stage="antivirus",kind="timeout"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("{CLAMD_UP} 0")), "{metrics}");
}

#[test]
fn a_closed_connection_is_unreachable() {
    let (error, _) = with_metrics(async {
        let (addr, _rx) = fake_clamd(Fake::Close).await;
        stage_at(addr)
            .process(&analysis(), &Body::new(b"x".to_vec()))
            .await
            .unwrap_err()
    });
    let error = transient(error);
    assert_eq!(error.kind(), "unreachable", "{error:?}");
}

#[test]
fn no_clamd_is_unreachable_and_ping_fails() {
    let ((scan, ping), metrics) = with_metrics(async {
        // A port that was free a moment ago: nothing listens there now.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let av = stage_at(addr);
        let scan = av
            .process(&analysis(), &Body::new(b"x".to_vec()))
            .await
            .unwrap_err();
        (scan, av.ping().await.unwrap_err())
    });
    let scan = transient(scan);
    assert!(
        matches!(scan, AntivirusError::Unreachable { .. }),
        "{scan:?}"
    );
    assert!(
        scan.to_string().starts_with("clamd at tcp://127.0.0.1:"),
        "{scan}"
    );
    assert_eq!(ping.kind(), "unreachable");
    assert!(
        metrics.contains(r#"pampa_stage_errors_total{stage="antivirus",kind="unreachable"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("{CLAMD_UP} 0")), "{metrics}");
}

#[test]
fn ping_wants_pong() {
    let ((ok, bad), metrics) = with_metrics(async {
        let (addr, mut rx) = fake_clamd(Fake::Reply(b"PONG\0")).await;
        let ok = stage_at(addr).ping().await;
        assert_eq!(rx.recv().await.unwrap(), b"PING");
        let (addr, _rx) = fake_clamd(Fake::Reply(b"UNKNOWN COMMAND\0")).await;
        (ok, stage_at(addr).ping().await)
    });
    ok.unwrap();
    assert!(
        matches!(bad, Err(AntivirusError::UnexpectedReply { .. })),
        "{bad:?}"
    );
    assert!(metrics.contains(&format!("{CLAMD_UP} 1")), "{metrics}");
}

#[test]
fn oversize_mail_is_skipped_with_a_tag_without_asking_clamd() {
    let ((findings, asked), _) = with_metrics(async {
        let (addr, mut rx) = fake_clamd(Fake::Reply(b"stream: OK\0")).await;
        let av = Antivirus::new(AntivirusConfig {
            clamd: format!("tcp://{addr}"),
            max_scan_bytes: 10,
            ..AntivirusConfig::default()
        })
        .unwrap();
        // Exactly the limit is still scanned.
        assert_eq!(
            av.process(&analysis(), &Body::new(vec![b'a'; 10]))
                .await
                .unwrap(),
            Findings::default()
        );
        rx.recv().await.unwrap();
        let findings = av
            .process(&analysis(), &Body::new(vec![b'a'; 11]))
            .await
            .unwrap();
        (findings, rx.try_recv().is_ok())
    });
    assert!(!asked, "an oversize message was sent to clamd");
    assert_eq!(
        findings.tags,
        vec![Tag::new(
            NOT_SCANNED_TOO_LARGE,
            "11 bytes, more than max_scan_bytes 10"
        )]
    );
}

#[test]
fn oversize_mail_can_tempfail_instead() {
    let (error, metrics) = with_metrics(async {
        let av = Antivirus::new(AntivirusConfig {
            max_scan_bytes: 10,
            oversize: Oversize::Tempfail,
            ..AntivirusConfig::default()
        })
        .unwrap();
        av.process(&analysis(), &Body::new(vec![b'a'; 11]))
            .await
            .unwrap_err()
    });
    let error = transient(error);
    assert!(
        matches!(error, AntivirusError::TooLarge { size: 11, max: 10 }),
        "{error:?}"
    );
    assert!(
        metrics.contains(r#"pampa_stage_errors_total{stage="antivirus",kind="too_large"} 1"#),
        "{metrics}"
    );
}
