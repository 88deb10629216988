//! The server end to end on loopback: a zone file and a DNSBL dataset in a temporary
//! directory, the embedded event log, and queries over UDP and TCP built with
//! hickory-proto's message type.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use chrono::Utc;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use pampa_bus::{BusConfig, EventLog};
use pampa_dns::{
    Dns, DnsConfig, DnsError, DnsHandle, DnsblConfig, DnsblFormat, RateLimitConfig, ReloadOutcome,
    ZoneConfig,
};
use pampa_schemas::{decode_queries, DnsQuery, DnsTransport, ZoneKind};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::watch,
    task::JoinHandle,
};

const ZONE: &str = r#"$TTL 300
@       IN SOA ns1 hostmaster ( 2024060101 3600 600 86400 60 )
        IN NS  ns1
        IN MX  10 mail
        IN CAA 0 issue "letsencrypt.org"
ns1     IN A    192.0.2.1
mail    IN A    192.0.2.2
www     IN A    192.0.2.10
        IN AAAA 2001:db8::10
        IN TXT  "v=spf1 -all"
alias   IN CNAME www
far     IN CNAME www.elsewhere.org.
_sip._tcp IN SRV 10 5 5060 www
10      IN PTR  www.example.net.
*.wild  IN A    192.0.2.99
"#;

const BL: &str = "127.0.0.2\n1.2.3.4 :127.0.0.3:listed $\n";

fn big_txt() -> String {
    (0..20)
        .map(|i| format!("big IN TXT \"{i:02}-{}\"\n", "x".repeat(100)))
        .collect()
}

struct Server {
    addr: SocketAddr,
    handle: DnsHandle,
    log: EventLog,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    zone_file: PathBuf,
    bl_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut DnsConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let zone_file = dir.path().join("example.net.zone");
        std::fs::write(&zone_file, format!("{ZONE}{}", big_txt())).unwrap();
        let bl_file = dir.path().join("bl.ip4set");
        std::fs::write(&bl_file, BL).unwrap();
        let log = EventLog::open(&BusConfig::default(), &dir.path().join("data"))
            .await
            .unwrap();
        let mut config = DnsConfig {
            listen: "127.0.0.1:0".into(),
            zones: vec![ZoneConfig {
                name: "example.net".into(),
                file: zone_file.clone(),
            }],
            dnsbl: vec![DnsblConfig {
                name: "bl.example.net".into(),
                file: bl_file.clone(),
                format: DnsblFormat::Ip4set,
            }],
            dnsbl_poll_interval: Duration::from_millis(100),
            ..DnsConfig::default()
        };
        tweak(&mut config);
        let dns = Dns::new(config, log.clone(), Duration::from_secs(5)).unwrap();
        let sockets = dns.bind().await.unwrap();
        let addr = sockets.local_addr().unwrap();
        let handle = dns.handle();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(dns.serve(sockets, stop_rx));
        Server {
            addr,
            handle,
            log,
            stop,
            task,
            zone_file,
            bl_file,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("a response")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = udp_raw(addr, &m.to_vec().unwrap()).await;
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    r
}

async fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let bytes = m.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.unwrap();
    let r = Message::from_vec(&buf).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    r
}

fn rdata_types(m: &Message) -> Vec<RecordType> {
    m.answers.iter().map(|r| r.record_type()).collect()
}

#[tokio::test]
async fn authoritative_answers_over_udp_and_tcp() {
    let s = Server::start(|_| {}).await;
    for (name, rtype, expect) in [
        ("www.example.net.", RecordType::A, vec![RecordType::A]),
        ("www.example.net.", RecordType::AAAA, vec![RecordType::AAAA]),
        ("www.example.net.", RecordType::TXT, vec![RecordType::TXT]),
        ("example.net.", RecordType::MX, vec![RecordType::MX]),
        ("example.net.", RecordType::CAA, vec![RecordType::CAA]),
        ("example.net.", RecordType::NS, vec![RecordType::NS]),
        ("example.net.", RecordType::SOA, vec![RecordType::SOA]),
        (
            "_sip._tcp.example.net.",
            RecordType::SRV,
            vec![RecordType::SRV],
        ),
        ("10.example.net.", RecordType::PTR, vec![RecordType::PTR]),
        (
            "alias.example.net.",
            RecordType::A,
            vec![RecordType::CNAME, RecordType::A],
        ),
        ("far.example.net.", RecordType::A, vec![RecordType::CNAME]),
        ("a.b.wild.example.net.", RecordType::A, vec![RecordType::A]),
    ] {
        for over_tcp in [false, true] {
            let q = query(name, rtype, Some(1232));
            let r = if over_tcp {
                tcp(s.addr, &q).await
            } else {
                udp(s.addr, &q).await
            };
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NoError,
                "{name} {rtype}"
            );
            assert!(r.metadata.authoritative, "{name} {rtype}: AA");
            assert_eq!(rdata_types(&r), expect, "{name} {rtype} (tcp: {over_tcp})");
            assert!(r.edns.is_some(), "an EDNS query gets OPT back");
        }
    }
    // The MX answer carries the exchange's address.
    let r = udp(s.addr, &query("example.net.", RecordType::MX, None)).await;
    assert!(r
        .additionals
        .iter()
        .any(|a| a.record_type() == RecordType::A));
    assert!(r.edns.is_none(), "no OPT without EDNS");
    // Wildcard answers are owned by the query name.
    let r = udp(s.addr, &query("a.b.wild.example.net.", RecordType::A, None)).await;
    assert_eq!(
        r.answers[0].name,
        Name::from_str("a.b.wild.example.net.").unwrap()
    );
    // Case is preserved in the question, matched without it.
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("WwW.ExAmPlE.NeT.").unwrap(),
        RecordType::A,
    ));
    let r = udp(s.addr, &q).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.queries[0].name().to_string(), "WwW.ExAmPlE.NeT.");
    s.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let s = Server::start(|_| {}).await;
    let nx = udp(s.addr, &query("nope.example.net.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nx.authorities[0].ttl, 60, "min(SOA TTL, MINIMUM)");

    let nodata = udp(s.addr, &query("mail.example.net.", RecordType::AAAA, None)).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

    // `wild.example.net` has no records but a name below it: it exists.
    let ent = udp(s.addr, &query("wild.example.net.", RecordType::A, None)).await;
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
    s.stop().await;
}

#[tokio::test]
async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let s = Server::start(|_| {}).await;
    let q = query("big.example.net.", RecordType::TXT, Some(512));
    let r = udp(s.addr, &q).await;
    assert!(r.metadata.truncation, "TC set");
    assert!(r.answers.is_empty());
    assert!(r.edns.is_some());
    let r = tcp(s.addr, &q).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 20);

    // A client offering 4096 gets what fits our 1232 cap: still truncated (2 KiB).
    let r = udp(
        s.addr,
        &query("big.example.net.", RecordType::TXT, Some(4096)),
    )
    .await;
    assert!(r.metadata.truncation);
    assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    s.stop().await;
}

#[tokio::test]
async fn malformed_and_unsupported_queries() {
    let s = Server::start(|_| {}).await;
    // A header that promises a question, then garbage.
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, 0xff, 0xff]);
    let r = Message::from_vec(&udp_raw(s.addr, &garbage).await).unwrap();
    assert_eq!(r.metadata.id, 0xabcd);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    // Too short for a header: dropped, and the server goes on answering.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&[1, 2, 3], s.addr).await.unwrap();
    let q = query("www.example.net.", RecordType::A, None);
    socket.send_to(&q.to_vec().unwrap(), s.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.id,
        q.metadata.id
    );

    // Unknown opcode.
    let mut status = query("www.example.net.", RecordType::A, None);
    status.metadata.op_code = OpCode::Status;
    let r = udp(s.addr, &status).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);

    // EDNS version 1.
    let mut v1 = query("www.example.net.", RecordType::A, Some(1232));
    if let Some(e) = v1.edns.as_mut() {
        e.set_version(1);
    }
    let r = udp(s.addr, &v1).await;
    // 16 is BADVERS in an OPT-extended rcode (hickory reads it as BADSIG, its TSIG twin).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.edns.is_some());

    // Zone transfers are not served; other classes neither.
    let r = tcp(s.addr, &query("example.net.", RecordType::AXFR, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let mut chaos = Message::query();
    let mut cq = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
    cq.set_query_class(DNSClass::CH);
    chaos.add_query(cq);
    let r = udp(s.addr, &chaos).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    // Random bytes never crash the server.
    let mut seed = 0x1234_5678u32;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..300 {
        let len = (seed % 80) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let _ = sock.send_to(&bytes, s.addr).await;
    }
    let r = udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    assert_eq!(r.answers.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn recursion_is_refused_outside_the_acl() {
    let s = Server::start(|c| c.recursion_allowed = vec!["192.0.2.0/24".into()]).await;
    let r = udp(s.addr, &query("www.example.org.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.recursion_available);
    let r = tcp(s.addr, &query("www.example.org.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // Our own zones answer everyone.
    let r = udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let r = udp(
        s.addr,
        &query("4.3.2.1.bl.example.net.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    s.stop().await;
}

#[tokio::test]
async fn forwarding_and_the_cache() {
    // The upstream is another pampa, authoritative for example.net.
    let upstream = Server::start(|c| c.dnsbl.clear()).await;
    let upstream_addr = upstream.addr;
    let s = Server::start(|c| {
        c.zones.clear();
        c.dnsbl.clear();
        c.forwarders = vec![upstream_addr.to_string()];
    })
    .await;
    let first = udp(s.addr, &query("alias.example.net.", RecordType::A, None)).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert!(first.metadata.recursion_available);
    assert!(!first.metadata.authoritative);
    assert!(first
        .answers
        .iter()
        .any(|r| r.data == RData::A(Ipv4Addr::new(192, 0, 2, 10).into())));
    let second = udp(s.addr, &query("alias.example.net.", RecordType::A, None)).await;
    assert_eq!(rdata_types(&second), rdata_types(&first));

    let nx = tcp(s.addr, &query("nope.example.net.", RecordType::A, None)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    let events = wait_events(&s.log, 3).await;
    let kinds: Vec<ZoneKind> = events.iter().map(|e| e.zone_kind).collect();
    assert_eq!(kinds[0], ZoneKind::Recursive);
    assert_eq!(kinds[1], ZoneKind::Cache);
    s.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn dnsbl_zone_answers_and_reloads() {
    let s = Server::start(|_| {}).await;
    let r = udp(
        s.addr,
        &query("4.3.2.1.bl.example.net.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        r.answers[0].data,
        RData::A(Ipv4Addr::new(127, 0, 0, 3).into())
    );
    let r = udp(
        s.addr,
        &query("4.3.2.1.bl.example.net.", RecordType::TXT, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    let r = udp(
        s.addr,
        &query("2.0.0.127.bl.example.net.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.answers.len(), 1, "the RFC 5782 test entry");
    let r = udp(
        s.addr,
        &query("5.3.2.1.bl.example.net.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = udp(s.addr, &query("bl.example.net.", RecordType::SOA, None)).await;
    assert_eq!(rdata_types(&r), vec![RecordType::SOA]);
    let r = udp(s.addr, &query("bl.example.net.", RecordType::NS, None)).await;
    assert_eq!(rdata_types(&r), vec![RecordType::NS]);

    // A new file is picked up by the poller.
    std::fs::write(&s.bl_file, format!("{BL}1.2.3.5\n")).unwrap();
    wait_for(|| async {
        udp(
            s.addr,
            &query("5.3.2.1.bl.example.net.", RecordType::A, None),
        )
        .await
        .metadata
        .response_code
            == ResponseCode::NoError
    })
    .await;
    // A broken one keeps the old data serving.
    std::fs::write(&s.bl_file, "1.2.3.4 :not-an-address:x\n300.1.1.1\n").unwrap();
    let report = s.handle.reload_report().await;
    assert!(
        matches!(report.dnsbl[0].outcome, ReloadOutcome::Failed(_)),
        "{report:?}"
    );
    let r = udp(
        s.addr,
        &query("5.3.2.1.bl.example.net.", RecordType::A, None),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    s.stop().await;
}

#[tokio::test]
async fn reload_swaps_zones_and_keeps_the_old_on_error() {
    let s = Server::start(|_| {}).await;
    let new = ZONE
        .replace("2024060101", "2024060102")
        .replace("www     IN A    192.0.2.10", "www     IN A    192.0.2.11");
    std::fs::write(&s.zone_file, &new).unwrap();
    let report = s.handle.reload().await.unwrap();
    assert_eq!(
        report.zones[0].outcome,
        ReloadOutcome::Loaded {
            serial: 2024060102,
            records: 14
        }
    );
    let r = udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    assert_eq!(
        r.answers[0].data,
        RData::A(Ipv4Addr::new(192, 0, 2, 11).into())
    );

    // Line 7 is broken.
    let broken = new.replace("mail    IN A    192.0.2.2", "mail    IN A    192.0.2.256");
    std::fs::write(&s.zone_file, &broken).unwrap();
    let err = s.handle.reload().await.unwrap_err();
    match &err {
        DnsError::Zone { path, line, .. } => {
            assert_eq!(path, &s.zone_file);
            assert_eq!(*line, Some(7), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("line 7"), "{err}");
    let r = udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    assert_eq!(
        r.answers[0].data,
        RData::A(Ipv4Addr::new(192, 0, 2, 11).into())
    );

    // Queries keep being answered while reloads run.
    let addr = s.addr;
    let load = tokio::spawn(async move {
        for _ in 0..50 {
            let r = udp(addr, &query("www.example.net.", RecordType::A, None)).await;
            assert_eq!(r.answers.len(), 1);
        }
    });
    std::fs::write(&s.zone_file, &new).unwrap();
    for _ in 0..5 {
        s.handle.reload().await.unwrap();
    }
    load.await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn every_query_becomes_an_event() {
    let since = Utc::now();
    let s = Server::start(|c| c.recursion_allowed = vec!["192.0.2.0/24".into()]).await;
    udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    tcp(s.addr, &query("nope.example.net.", RecordType::MX, None)).await;
    udp(
        s.addr,
        &query("4.3.2.1.bl.example.net.", RecordType::A, None),
    )
    .await;
    udp(s.addr, &query("www.example.org.", RecordType::A, None)).await;
    let events = wait_events(&s.log, 4).await;
    let e = &events[0];
    assert!(e.time >= since);
    assert_eq!(e.client_ip, "127.0.0.1");
    assert_ne!(e.client_port, 0);
    assert_eq!(e.transport, DnsTransport::Udp);
    assert_eq!(e.qname, "www.example.net.");
    assert_eq!(e.qtype, "A");
    assert_eq!(e.qclass, "IN");
    assert_eq!(e.rcode, "NOERROR");
    assert_eq!(e.answer_count, 1);
    assert_eq!(e.zone_kind, ZoneKind::Authoritative);
    assert_eq!(e.zone.as_deref(), Some("example.net."));
    assert!(e.response_size > 12);
    assert!(e.id.is_some());

    let e = &events[1];
    assert_eq!(e.transport, DnsTransport::Tcp);
    assert_eq!(e.rcode, "NXDOMAIN");
    assert_eq!(e.qtype, "MX");
    assert_eq!(e.answer_count, 0);
    assert_eq!(events[2].zone_kind, ZoneKind::Dnsbl);
    assert_eq!(events[3].zone_kind, ZoneKind::Refused);
    assert_eq!(events[3].rcode, "REFUSED");
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_slips_and_drops() {
    let s = Server::start(|c| {
        c.recursion_allowed = vec!["192.0.2.0/24".into()];
        c.rate_limit = RateLimitConfig {
            responses_per_second: 5,
            slip: 1,
            ..RateLimitConfig::default()
        };
    })
    .await;
    let mut truncated = 0;
    for _ in 0..20 {
        let r = udp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
        if r.metadata.truncation {
            truncated += 1;
        }
    }
    // Within one second at most 5 go out whole; if the run straddles a second
    // boundary, up to 10 do.
    assert!(truncated >= 10, "{truncated} slipped");
    // TCP is never limited.
    let r = tcp(s.addr, &query("www.example.net.", RecordType::A, None)).await;
    assert!(!r.metadata.truncation);
    s.stop().await;
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_events(log: &EventLog, n: usize) -> Vec<DnsQuery> {
    let since = Utc::now() - chrono::Duration::minutes(5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut events: Vec<DnsQuery> = log
            .replay("dns.query", since)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|e| {
                let batch = decode_queries(&e.payload).unwrap().payload;
                batch.iter().collect::<Vec<_>>()
            })
            .collect();
        if events.len() >= n {
            // Publishes run concurrently: order by arrival.
            events.sort_by_key(|e| e.time);
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// dig sends EDNS with a cookie and other options by default; none of it may upset the
/// server. Skipped where dig is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_is_answered_cleanly() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("dig is not installed; skipping");
        return;
    }
    let s = Server::start(|_| {}).await;
    let port = s.addr.port().to_string();
    let dig = move |args: Vec<&'static str>| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("dig")
                .args(["@127.0.0.1", "-p", &port, "+tries=1", "+time=5"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    for args in [
        vec!["www.example.net", "A"],
        vec!["www.example.net", "A", "+tcp"],
        vec!["nope.example.net", "A", "+nsid", "+expire"],
        vec!["4.3.2.1.bl.example.net", "TXT"],
        vec!["example.net", "ANY"],
    ] {
        let out = dig(args.clone()).await.unwrap();
        assert!(out.contains("flags: qr aa"), "{args:?}: {out}");
        assert!(out.contains("OPT PSEUDOSECTION"), "{args:?}: {out}");
        assert!(!out.to_lowercase().contains("warning"), "{args:?}: {out}");
    }
    // Truncated over UDP, dig retries over TCP by itself and gets all 20.
    let out = dig(vec!["big.example.net", "TXT", "+bufsize=512"])
        .await
        .unwrap();
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 20"), "{out}");
    s.stop().await;
}
