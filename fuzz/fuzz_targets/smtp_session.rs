//! A whole SMTP session of pampa-ingest, driven by arbitrary client bytes.
//!
//! Built once: a tokio runtime, the embedded event log and a SQLite directory (domain
//! `example.net`, user `bob@example.net`) in a temporary directory, and `Ingest` serving
//! on a loopback port with small limits. Each input opens a connection, writes the bytes
//! line by line (split after each `\r\n`, so pipelining and the DATA phase see several
//! reads), half-closes, and reads the replies until the server closes or a timeout.
//!
//! What must hold: the process does not panic (libFuzzer aborts on a panic in any
//! thread, the server's tasks included), the server greets, closes within its idle
//! timeout, and every line it sends is an SMTP reply line (`ddd` then space or `-`).
#![no_main]

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use pampa_bus::{BusConfig, EventLog};
use pampa_directory::Directory;
use pampa_ingest::{Ingest, SmtpConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (addr, stop) = runtime.block_on(async {
            let log = EventLog::open(&BusConfig::default(), &dir.path().join("data"))
                .await
                .unwrap();
            let url = format!("sqlite://{}", dir.path().join("pampa.db").display());
            let directory = Directory::connect(&url).await.unwrap();
            directory.add_domain("example.net").await.unwrap();
            directory
                .add_user("bob@example.net", "secret", "normal")
                .await
                .unwrap();
            let config = SmtpConfig {
                listen: "127.0.0.1:0".into(),
                hostname: "mx.example.net".into(),
                max_message_bytes: 64 * 1024,
                max_recipients: 10,
                max_line_length: 1000,
                max_commands: 100,
                max_errors: 10,
                idle_timeout: Duration::from_secs(1),
                unknown_recipient_limit: u32::MAX,
                max_connections: 64,
                max_connections_per_ip: 64,
                max_connection_rate_per_ip: 0,
                ..SmtpConfig::default()
            };
            let ingest = Ingest::new(config, log, directory, Duration::from_secs(5)).unwrap();
            let listener = ingest.bind().await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(ingest.serve(listener, stop_rx));
            (addr, stop)
        });
        Fixture {
            runtime,
            addr,
            _stop: stop,
            _dir: dir,
        }
    })
}

/// The input cut after each CRLF (the last piece may have none).
fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..data.len() {
        if data[i - 1] == b'\r' && data[i] == b'\n' {
            out.push(&data[start..=i]);
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let replies = f.runtime.block_on(async {
        let stream = TcpStream::connect(f.addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut out)).await;
            out
        });
        for piece in lines(data) {
            if write.write_all(piece).await.is_err() {
                break; // the server closed: 421 after too many errors, and the like
            }
        }
        let _ = write.shutdown().await;
        reader.await.expect("reader")
    });
    assert!(
        replies.starts_with(b"220 ") || replies.starts_with(b"421 "),
        "no greeting: {:?}",
        String::from_utf8_lossy(&replies[..replies.len().min(200)])
    );
    for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let ok = line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-')
            && line.ends_with(b"\r");
        assert!(ok, "not an SMTP reply line: {:?}", String::from_utf8_lossy(line));
    }
});
