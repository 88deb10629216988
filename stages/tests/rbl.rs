//! The rbl stage against a real rbldnsd (Debian's `rbldnsd`, which `ops/test.sh`
//! installs), started on a free loopback port with zones written for each test.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use chrono::Utc;
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived, Tag};
use pampa_stages::{
    rbl::{ListConfig, ListKind, Rbl, RblConfig, LIST_DISABLED},
    Body, Findings, Stage,
};

/// An IP list: the RFC 5782 test entry, a CIDR range with a hole, a second code, and
/// an error code.
const IP_ZONE: &str = "\
:127.0.0.2:listed
127.0.0.2
10.9.0.0/16
!10.9.1.1
10.20.30.40 :127.0.0.4:code four
10.66.0.1 :127.255.255.254:refused
";

/// IPv6 entries of the same zone.
const IP6_ZONE: &str = "\
:127.0.0.2:listed
2001:db8:5::/48
";

/// A domain list: one domain, a domain with all its subdomains, the RFC 5782 test
/// entry, and an IP-literal link's reversed address.
const URI_ZONE: &str = "\
:127.0.0.2:listed
listed.example
.spammy.test
test
1.2.0.192
";

/// Everything. ip4set refuses `0.0.0.0/0`, so the whole space is spelled as a range.
const WORLD_ZONE: &str = "0.0.0.0-255.255.255.255\n";

mod support;
use support::{run, Rbldnsd, A};

/// Serves the four test zones.
fn rbldnsd() -> Rbldnsd {
    Rbldnsd::start(
        &[
            ("ip.zone", IP_ZONE),
            ("ip6.zone", IP6_ZONE),
            ("uri.zone", URI_ZONE),
            ("world.zone", WORLD_ZONE),
        ],
        &[
            "bl.test:ip4set:ip.zone",
            "bl.test:ip6trie:ip6.zone",
            "uri.test:dnset:uri.zone",
            "world.test:ip4set:world.zone",
        ],
        ("2.0.0.127.bl.test", A),
    )
}

fn errors(kind: &str) -> String {
    support::errors("rbl", kind)
}

// ------------------------------------------------------------------ helpers --

fn analysis(ip: &str) -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: "m1".into(),
        client: ClientInfo {
            ip: ip.into(),
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

fn ip_list() -> ListConfig {
    let mut list = ListConfig::new("bl.test", ListKind::Ip);
    list.tag = Some("RBL_TEST".into());
    list.weights.insert(Ipv4Addr::new(127, 0, 0, 2), 4.0);
    list.weights.insert(Ipv4Addr::new(127, 0, 0, 4), 3.0);
    list.errors = vec![Ipv4Addr::new(127, 255, 255, 254)];
    list
}

fn uri_list() -> ListConfig {
    let mut list = ListConfig::new("uri.test", ListKind::Uri);
    list.weights.insert(Ipv4Addr::new(127, 0, 0, 2), 2.5);
    list
}

fn stage(server: SocketAddr, lists: Vec<ListConfig>) -> Rbl {
    Rbl::new(RblConfig {
        resolver: Some(server),
        timeout_ms: 1500,
        lists,
        ..RblConfig::default()
    })
    .unwrap()
}

async fn process(rbl: &Rbl, ip: &str, body: &str) -> Findings {
    let raw = format!("From: a@example.org\r\nTo: b@example.net\r\nSubject: links\r\n\r\n{body}");
    rbl.process(&analysis(ip), &Body::new(raw.into_bytes()))
        .await
        .unwrap()
}

fn rbl_tag(code: &str, ip: &str, weight: f64) -> Tag {
    Tag {
        name: "RBL_TEST".into(),
        evidence: format!("{code} from bl.test for {ip}"),
        weight: Some(weight),
    }
}

// -------------------------------------------------------------------- tests --

#[test]
fn client_ips_are_tagged_with_the_weight_of_their_code() {
    let server = rbldnsd();
    let (results, recorded) = run(async {
        let rbl = stage(server.addr, vec![ip_list()]);
        let mut results = Vec::new();
        for ip in [
            "127.0.0.2",
            "127.0.0.1",
            "10.9.5.5",
            "10.9.1.1",
            "10.20.30.40",
            "10.66.0.1",
            "2001:db8:5::25",
            "2001:db8:6::1",
        ] {
            results.push((ip, process(&rbl, ip, "").await.tags));
        }
        (results, rbl.is_disabled("bl.test"))
    });
    let (results, disabled) = results;
    let expected: [(&str, Vec<Tag>); 8] = [
        ("127.0.0.2", vec![rbl_tag("127.0.0.2", "127.0.0.2", 4.0)]),
        ("127.0.0.1", vec![]),
        ("10.9.5.5", vec![rbl_tag("127.0.0.2", "10.9.5.5", 4.0)]),
        // Excluded from the range.
        ("10.9.1.1", vec![]),
        (
            "10.20.30.40",
            vec![rbl_tag("127.0.0.4", "10.20.30.40", 3.0)],
        ),
        // An error code is no hit.
        ("10.66.0.1", vec![]),
        (
            "2001:db8:5::25",
            vec![rbl_tag("127.0.0.2", "2001:db8:5::25", 4.0)],
        ),
        ("2001:db8:6::1", vec![]),
    ];
    for ((ip, tags), (want_ip, want)) in results.iter().zip(expected.iter()) {
        assert_eq!(ip, want_ip);
        assert_eq!(tags, want, "client {ip}");
    }
    assert_eq!(disabled, Some(false));
    assert_eq!(recorded.get(&errors("list_error_code")), 1.0);
    assert_eq!(recorded.get(&errors("timeout")), 0.0);
}

#[test]
fn body_domains_are_reduced_and_tagged() {
    let server = rbldnsd();
    let (findings, _) = run(async {
        let rbl = stage(server.addr, vec![uri_list()]);
        let listed = process(
            &rbl,
            "192.0.2.99",
            "Buy at http://www.shop.listed.example/now or\r\n\
             <http://a.b.spammy.test/x>, see also http://clean.example/ and http://192.0.2.1/.\r\n",
        )
        .await;
        let clean = process(
            &rbl,
            "192.0.2.99",
            "Only http://www.clean.example/ here.\r\n",
        )
        .await;
        (listed, clean)
    });
    let (listed, clean) = findings;
    assert_eq!(
        listed.tags,
        [Tag {
            name: "URIBL_URI_TEST".into(),
            evidence: "127.0.0.2 from uri.test for listed.example, spammy.test, 192.0.2.1".into(),
            weight: Some(2.5),
        }]
    );
    assert_eq!(clean.tags, []);
}

#[test]
fn a_zone_that_lists_the_world_is_disabled_and_tags_nothing() {
    let server = rbldnsd();
    let mut world = ListConfig::new("world.test", ListKind::Ip);
    world.tag = Some("RBL_WORLD".into());
    let ((tags, world_disabled, bl_disabled), recorded) = run(async {
        let rbl = stage(server.addr, vec![ip_list(), world]);
        // No waiting for the probe first: the first message must already be safe.
        let tags = process(&rbl, "127.0.0.2", "").await.tags;
        (
            tags,
            rbl.is_disabled("world.test"),
            rbl.is_disabled("bl.test"),
        )
    });
    assert_eq!(tags, [rbl_tag("127.0.0.2", "127.0.0.2", 4.0)]);
    assert_eq!(world_disabled, Some(true));
    assert_eq!(bl_disabled, Some(false));
    assert_eq!(
        recorded.get(&format!("{LIST_DISABLED}{{list=\"world.test\"}}")),
        1.0
    );
    assert_eq!(
        recorded.get(&format!("{LIST_DISABLED}{{list=\"bl.test\"}}")),
        0.0
    );
}

#[test]
fn a_black_holed_resolver_costs_a_timeout_and_no_tag() {
    // Bound and never read: queries vanish, as when a resolver is down behind a
    // firewall that drops packets.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout_ms = 300;
    let ((tags, elapsed), recorded) = run(async {
        let rbl = Rbl::new(RblConfig {
            resolver: Some(hole.local_addr().unwrap()),
            timeout_ms,
            lists: vec![ip_list(), uri_list()],
            ..RblConfig::default()
        })
        .unwrap();
        let start = Instant::now();
        let tags = process(&rbl, "127.0.0.2", "http://www.listed.example/\r\n")
            .await
            .tags;
        (tags, start.elapsed())
    });
    assert_eq!(tags, []);
    // The lookups and the first health probe run side by side, each bounded by the
    // timeout; the margin is for a slow machine, not for a second round.
    assert!(
        elapsed < Duration::from_millis(2 * timeout_ms),
        "took {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(timeout_ms - 50),
        "took only {elapsed:?}"
    );
    assert!(
        recorded.get(&errors("timeout")) >= 2.0,
        "{:?}",
        recorded.all()
    );
    drop(hole);
}
