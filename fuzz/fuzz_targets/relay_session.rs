//! The relay's SMTP client against a hostile remote MX: the server's side of the
//! conversation is the input.
//!
//! Each input starts a loopback server that, on every connection (the client may come
//! back once without STARTTLS), writes the input cut after each CRLF, one piece per
//! line the client sends, and then the rest, and drains what the client sends. The
//! client makes one attempt for three recipients, routed to that server.
//!
//! What must hold: no panic, the attempt ends (every wait is bounded), and each
//! recipient gets exactly one result.
#![no_main]

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use pampa_relay::{
    client::{self, Outgoing},
    mx::MxResolver,
    RelayConfig,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    resolver: MxResolver,
    tls: tokio_rustls::TlsConnector,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Never asked: the route names an IP address.
        let resolver = runtime.block_on(async {
            MxResolver::new(Some("127.0.0.1:9".parse().unwrap()), Duration::from_millis(100))
                .unwrap()
        });
        Fixture {
            runtime,
            resolver,
            tls: client::opportunistic_tls(),
        }
    })
}

/// The input cut after each CRLF (the last piece may have none).
fn lines(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..data.len() {
        if data[i - 1] == b'\r' && data[i] == b'\n' {
            out.push(data[start..=i].to_vec());
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push(data[start..].to_vec());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let pieces = lines(data);
    let recipients = vec![
        "a@fuzz.test".to_owned(),
        "b@fuzz.test".to_owned(),
        "c@fuzz.test".to_owned(),
    ];
    let report = f.runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let pieces = pieces.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut pieces = pieces.into_iter();
                    if let Some(first) = pieces.next() {
                        let _ = write.write_all(&first).await;
                    }
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match read.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        if let Some(piece) = pieces.next() {
                            if write.write_all(&piece).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        let mut config = RelayConfig {
            hostname: "relay.fuzz.test".into(),
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(300),
            routes: BTreeMap::new(),
            ..RelayConfig::default()
        };
        config
            .routes
            .insert("fuzz.test".into(), format!("127.0.0.1:{port}"));
        let outgoing = Outgoing {
            sender: "alice@example.org",
            recipients: &recipients,
            body: b"From: alice@example.org\r\nSubject: x\r\n\r\n.dot\r\nbody\r\n",
        };
        let report = client::attempt(&config, &f.resolver, &f.tls, "fuzz.test", &outgoing).await;
        server.abort();
        report
    });
    let mut seen: Vec<&str> = report.recipients.iter().map(|(r, _, _)| r.as_str()).collect();
    seen.sort();
    assert_eq!(seen, ["a@fuzz.test", "b@fuzz.test", "c@fuzz.test"], "{report:?}");
});
