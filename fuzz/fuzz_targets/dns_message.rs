//! The DNS role's decoder and answer path, through pampa-dns's public API.
//!
//! The first byte picks what the rest is:
//! - `0x00..=0xEF` (most inputs): the whole input is a query datagram. It is decoded
//!   with hickory-proto as the server decodes it, and sent over UDP to a live `Dns`
//!   server on loopback (an authoritative zone, an ip4set, an ip6trie and a dnset DNSBL
//!   zone; no recursion, no rate limit, no query log). Whatever comes back must decode.
//!   The question names are also looked up in the DNSBL datasets directly.
//! - `0xF0..=0xF3`: the rest is rbldnsd dataset text (ip4set, ip4trie, ip6trie, dnset),
//!   parsed leniently and queried.
//! - `0xF4..=0xFF`: the rest is an RFC 1035 master file for `Zone::parse` (inputs with
//!   `$INCLUDE` are skipped: zone files are the operator's, and it reads files).
//!
//! The server's `prepare`/`finish` (header checks, FORMERR, opcode, EDNS, truncation) and
//! `Zone::lookup` are private, so they are reached over the socket, not called.
#![no_main]

use std::{
    net::SocketAddr,
    path::Path,
    sync::OnceLock,
    time::Duration,
};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use pampa_bus::{BusConfig, EventLog};
use pampa_dns::{
    dnsbl::{Dataset, DatasetKind},
    Dns, DnsConfig, DnsblConfig, DnsblFormat, RateLimitConfig, Zone, ZoneConfig,
};
use tokio::{net::UdpSocket, sync::watch};

const ZONE: &str = r#"$TTL 300
@       IN SOA ns1 hostmaster ( 2024060101 3600 600 86400 60 )
        IN NS  ns1
        IN MX  10 mail
ns1     IN A    192.0.2.1
mail    IN A    192.0.2.2
www     IN A    192.0.2.10
        IN AAAA 2001:db8::10
        IN TXT  "v=spf1 -all"
alias   IN CNAME www
loop1   IN CNAME loop2
loop2   IN CNAME loop1
far     IN CNAME www.elsewhere.org.
_sip._tcp IN SRV 10 5 5060 www
sub     IN NS   ns.sub
ns.sub  IN A    192.0.2.53
*.wild  IN A    192.0.2.99
"#;

const IP4SET: &str = "127.0.0.2\n1.2.3.4 :127.0.0.3:listed $\n10.0.0.0/8\n192.0.2.0-192.0.2.127\n!192.0.2.5\n";
const IP6TRIE: &str = "2001:db8::/32 :127.0.0.2:v6 $\n::1\n";
const DNSET: &str = "spam.example.com\n.wild.example.com :127.0.0.4:wild $\n!ok.wild.example.com\n";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: SocketAddr,
    client: UdpSocket,
    datasets: Vec<Dataset>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let zone_file = write("example.net.zone", ZONE);
        let ip4 = write("bl.ip4set", IP4SET);
        let ip6 = write("bl.ip6trie", IP6TRIE);
        let dnset = write("dbl.dnset", DNSET);
        let (server, client, stop) = runtime.block_on(async {
            let log = EventLog::open(&BusConfig::default(), &dir.path().join("data"))
                .await
                .unwrap();
            let config = DnsConfig {
                listen: "127.0.0.1:0".into(),
                recursion_allowed: Vec::new(),
                zones: vec![ZoneConfig {
                    name: "example.net".into(),
                    file: zone_file,
                }],
                dnsbl: vec![
                    DnsblConfig {
                        name: "bl.example.net".into(),
                        file: ip4,
                        format: DnsblFormat::Ip4set,
                    },
                    DnsblConfig {
                        name: "bl6.example.net".into(),
                        file: ip6,
                        format: DnsblFormat::Ip6trie,
                    },
                    DnsblConfig {
                        name: "dbl.example.net".into(),
                        file: dnset,
                        format: DnsblFormat::Dnset,
                    },
                ],
                query_log: false,
                dnsbl_poll_interval: Duration::from_secs(3600),
                rate_limit: RateLimitConfig {
                    responses_per_second: 0,
                    ..RateLimitConfig::default()
                },
                ..DnsConfig::default()
            };
            let dns = Dns::new(config, log, Duration::from_secs(5)).unwrap();
            // The TCP side takes the port UDP got, which may be taken for TCP: retry.
            let mut sockets = None;
            for _ in 0..50 {
                if let Ok(s) = dns.bind().await {
                    sockets = Some(s);
                    break;
                }
            }
            let sockets = sockets.expect("a free loopback port for UDP and TCP");
            let addr = sockets.local_addr().unwrap();
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(dns.serve(sockets, stop_rx));
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            (addr, client, stop)
        });
        let datasets = vec![
            Dataset::parse(DatasetKind::Ip4Set, IP4SET).unwrap(),
            Dataset::parse(DatasetKind::Ip6Trie, IP6TRIE).unwrap(),
            Dataset::parse(DatasetKind::Dnset, DNSET).unwrap(),
        ];
        Fixture {
            runtime,
            server,
            client,
            datasets,
            _stop: stop,
            _dir: dir,
        }
    })
}

const KINDS: [DatasetKind; 4] = [
    DatasetKind::Ip4Set,
    DatasetKind::Ip4Trie,
    DatasetKind::Ip6Trie,
    DatasetKind::Dnset,
];

const PROBES: &[&str] = &[
    "2.0.0.127",
    "4.3.2.1",
    "5.2.0.192",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
    "spam.example.com",
    "a.wild.example.com.",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector {
        0xF0..=0xF3 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let loaded = Dataset::parse_lenient(KINDS[(selector - 0xF0) as usize], "fuzz", text);
            let set = &loaded.dataset;
            let _ = (set.len(), set.heap_bytes(), set.stored_keys(), set.soa(), set.ns());
            for probe in PROBES {
                let _ = set.query(probe);
                let _ = set.query_a(probe);
            }
            let _ = Dataset::parse(KINDS[(selector - 0xF0) as usize], text);
        }
        0xF4..=0xFF => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if text.to_ascii_lowercase().contains("$include") {
                return;
            }
            if let Ok(zone) = Zone::parse("example.net", Path::new("/nonexistent/fuzz.zone"), text) {
                let _ = (zone.origin(), zone.serial(), zone.records());
            }
        }
        _ => wire(data),
    }
});

fn wire(data: &[u8]) {
    let f = fixture();
    // What the server's decoder sees first.
    let parsed = Message::from_vec(data);
    if let Ok(message) = &parsed {
        if let Ok(bytes) = message.to_vec() {
            let _ = Message::from_vec(&bytes);
        }
        for query in message.queries.iter() {
            let name = query.name().to_ascii();
            for (zone, set) in [
                (".bl.example.net.", &f.datasets[0]),
                (".bl6.example.net.", &f.datasets[1]),
                (".dbl.example.net.", &f.datasets[2]),
            ] {
                let lower = name.to_ascii_lowercase();
                if let Some(labels) = lower.strip_suffix(zone) {
                    let _ = set.query(labels);
                }
            }
        }
    }
    // The live server: a reply, when one comes, must be a DNS message.
    let reply = f.runtime.block_on(async {
        let mut buf = vec![0u8; 65_535];
        // Drop late replies to earlier inputs.
        while f.client.try_recv(&mut buf).is_ok() {}
        f.client.send_to(data, f.server).await.ok()?;
        // The server drops what has no full header, and responses (QR set), silently.
        let dropped = data.len() < 12 || data[2] & 0x80 != 0;
        let wait = if dropped { 5 } else { 250 };
        let (n, _) = tokio::time::timeout(Duration::from_millis(wait), f.client.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some(buf)
    });
    if let Some(reply) = reply {
        if let Err(e) = Message::from_vec(&reply) {
            panic!("the server sent an undecodable reply ({e}): {reply:02x?}");
        }
    }
}
