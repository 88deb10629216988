use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived, Tag};

use super::{
    names::{parse_client_ip, Target},
    uri::{body_targets, decode_entities, host_target, scan_html, scan_text, Collector},
    *,
};

// ------------------------------------------------------------------ helpers --

/// A resolver that answers from a table; names not in it are not listed. The table can
/// change while the stage runs (for probes), and every asked name is recorded.
#[derive(Clone, Default)]
struct Fake {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    asked: Arc<Mutex<Vec<String>>>,
    /// Names that never get an answer.
    hang: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn answer(&self, name: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(name.to_owned(), answer);
    }

    fn list(&self, name: &str, codes: &[[u8; 4]]) {
        self.answer(
            name,
            Answer::Listed(codes.iter().map(|c| Ipv4Addr::from(*c)).collect()),
        );
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolve for Fake {
    async fn lookup_a(&self, name: &str) -> Answer {
        self.asked.lock().unwrap().push(name.to_owned());
        if self.hang.lock().unwrap().iter().any(|h| h == name) {
            std::future::pending::<()>().await;
        }
        self.answers
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or(Answer::NotListed)
    }
}

/// Counters and gauges by `name{label="value",…}` (labels sorted).
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<BTreeMap<String, f64>>>);

impl Recorded {
    fn get(&self, key: &str) -> f64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
    }
}

struct Slot {
    key: String,
    store: Recorded,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut f64)) {
        f(self
            .store
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default());
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|v| *v += value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|v| *v = value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|v| *v += value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| *v -= value);
    }
    fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }
}

impl Recorded {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Slot {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: self.clone(),
        })
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
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
    format!("{STAGE_ERRORS_TOTAL}{{kind=\"{kind}\",stage=\"rbl\"}}")
}

fn disabled(zone: &str) -> String {
    format!("{LIST_DISABLED}{{list=\"{zone}\"}}")
}

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

fn config(lists: Vec<ListConfig>) -> RblConfig {
    RblConfig {
        timeout_ms: 200,
        lists,
        ..RblConfig::default()
    }
}

fn ip_list(zone: &str) -> ListConfig {
    ListConfig::new(zone, ListKind::Ip)
}

fn uri_list(zone: &str) -> ListConfig {
    ListConfig::new(zone, ListKind::Uri)
}

fn domains(targets: &[Target]) -> Vec<String> {
    targets.iter().map(|t| t.to_string()).collect()
}

fn text_targets(text: &str) -> Vec<String> {
    let mut found = Collector::new(100);
    scan_text(text, &mut found);
    domains(&found.into_targets())
}

fn html_targets(html: &str) -> Vec<String> {
    let mut found = Collector::new(100);
    scan_html(html, &mut found);
    domains(&found.into_targets())
}

fn mail(headers: &str, body: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: b@example.net\r\nSubject: t\r\n{headers}\r\n{body}")
        .into_bytes()
}

// ---------------------------------------------------------------- reversal --

#[test]
fn ipv4_is_reversed_by_octet() {
    assert_eq!(reverse_ip("192.0.2.1".parse().unwrap()), "1.2.0.192");
    assert_eq!(
        Target::Ip("127.0.0.2".parse().unwrap()).query_name("zen.example"),
        "2.0.0.127.zen.example"
    );
}

#[test]
fn ipv6_is_reversed_by_nibble() {
    // The example of RFC 5782 §2.4.
    let ip: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
    assert_eq!(
        reverse_ip(ip),
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
    );
    assert_eq!(
        reverse_ip("::1".parse().unwrap()),
        format!("1{}", ".0".repeat(31))
    );
}

#[test]
fn the_client_ip_is_read_leniently() {
    assert_eq!(
        parse_client_ip("127.0.0.2"),
        Some(IpAddr::from([127, 0, 0, 2]))
    );
    assert_eq!(
        parse_client_ip("::ffff:192.0.2.7"),
        Some(IpAddr::from([192, 0, 2, 7]))
    );
    assert_eq!(parse_client_ip("[2001:db8::1]"), "2001:db8::1".parse().ok());
    assert_eq!(parse_client_ip("unknown"), None);
}

// ------------------------------------------------------------ URL finding --

#[test]
fn links_in_plain_text_are_found_and_reduced() {
    let text = "Visit http://www.Example.com/path, or HTTPS://user:pw@shop.example.net:8080/x?y\n\
                and www.third.example.org. Not: awww.nope.example or mail me@mail.example.";
    assert_eq!(
        text_targets(text),
        ["example.com", "example.net", "example.org"]
    );
}

#[test]
fn the_registrable_domain_follows_the_public_suffix_list() {
    let domain = |host: &str| host_target(host).map(|t| t.to_string());
    assert_eq!(
        domain("www.sub.example.co.uk").as_deref(),
        Some("example.co.uk")
    );
    assert_eq!(domain("a.b.example.com.").as_deref(), Some("example.com"));
    // Unknown TLDs (test zones) act as public suffixes.
    assert_eq!(domain("x.spammy.test").as_deref(), Some("spammy.test"));
    // IDNs are queried in punycode, as browsers resolve them.
    assert_eq!(domain("www.bücher.de").as_deref(), Some("xn--bcher-kva.de"));
    // Percent-encoded hosts are what a browser decodes them to.
    assert_eq!(domain("%65vil.example.com").as_deref(), Some("example.com"));
    // A public suffix alone, or a single label, names nobody.
    assert_eq!(domain("co.uk"), None);
    assert_eq!(domain("localhost"), None);
    assert_eq!(domain("bad host.example"), None);
}

#[test]
fn ip_literal_links_are_targets_queried_reversed() {
    let found = text_targets(
        "see http://192.0.2.1/x and http://[2001:db8::1]:8080/y and http://[::ffff:198.51.100.9]/",
    );
    assert_eq!(found, ["192.0.2.1", "2001:db8::1", "198.51.100.9"]);
    let target = host_target("192.0.2.1").unwrap();
    assert_eq!(target.query_name("uri.test"), "1.2.0.192.uri.test");
}

#[test]
fn html_hrefs_are_found_even_when_obfuscated() {
    let html = r#"<p>Hello</p>
        <a href="http://evil&#46;example.com/x">click</a>
        <A HREF=https://OTHER.example.net>b</A>
        <a title="t"href='//third.example.org/p'>c</a>
        <a href="h&#x74;tp://fourth&period;example.info/">d</a>
        <a href=" h
tp://nope.example/">e</a>
        <a href="mailto:x@mail.example">m</a> <a href="/relative">r</a>
        <img src="x.png" data-href="x"> visible: www.fifth.example.biz"#;
    assert_eq!(
        html_targets(html),
        [
            "example.com",
            "example.net",
            "example.org",
            "example.info",
            "example.biz"
        ]
    );
}

#[test]
fn entities_decode_to_what_a_browser_shows() {
    assert_eq!(
        decode_entities("a&#46;b&#x2E;c&#46d&amp;e&unknown;f&"),
        "a.b.c.d&e&unknown;f&"
    );
}

#[test]
fn quoted_printable_and_base64_parts_are_decoded() {
    let raw = mail(
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n",
        "--b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         Go to http://www.qp-do=\r\nmain=2Eexample/now\r\n\
         --b\r\n\
         Content-Type: text/html\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         PGEgaHJlZj0iaHR0cDovL2I2NC5leGFtcGxlLmNvbS8iPng8L2E+\r\n\
         --b\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         aHR0cDovL2JpbmFyeS5leGFtcGxlLw==\r\n\
         --b--\r\n",
    );
    // The base64 HTML is `<a href="http://b64.example.com/">x</a>`; the binary part
    // (`http://binary.example/`) is an attachment, not read.
    assert_eq!(
        domains(&body_targets(&raw, 20)),
        ["qp-domain.example", "example.com"]
    );
}

#[test]
fn nested_messages_are_read_too() {
    let raw = mail(
        "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n",
        "Subject: inner\r\n\r\nhttp://inner.example.org/\r\n",
    );
    assert_eq!(domains(&body_targets(&raw, 20)), ["example.org"]);
}

#[test]
fn the_number_of_domains_is_bounded_and_duplicates_count_once() {
    let text: String = (0..50)
        .map(|i| format!("http://a.d{i}.example/ http://b.d{i}.example/\n"))
        .collect();
    let raw = mail("", &text);
    let found = domains(&body_targets(&raw, 5));
    assert_eq!(
        found,
        [
            "d0.example",
            "d1.example",
            "d2.example",
            "d3.example",
            "d4.example"
        ]
    );
    assert!(body_targets(&raw, 0).is_empty());
}

// ------------------------------------------------------------------- tags --

#[test]
fn tag_names_derive_from_the_zone() {
    assert_eq!(ip_list("zen.example.").tag_name(), "RBL_ZEN_EXAMPLE");
    assert_eq!(uri_list("dbl-1.Example").tag_name(), "URIBL_DBL_1_EXAMPLE");
    let mut named = ip_list("zen.example");
    named.tag = Some("RBL_ZEN".into());
    assert_eq!(named.tag_name(), "RBL_ZEN");
}

#[test]
fn each_code_is_one_tag_weighted_per_code() {
    let ((findings, asked), _) = run(async {
        let fake = Fake::default();
        fake.list(
            "2.2.0.192.zen.example",
            &[[127, 0, 0, 4], [127, 0, 0, 2], [127, 0, 0, 9]],
        );
        let mut list = ip_list("zen.example");
        list.tag = Some("RBL_ZEN".into());
        list.weights.insert(Ipv4Addr::new(127, 0, 0, 2), 4.0);
        list.weights.insert(Ipv4Addr::new(127, 0, 0, 4), 3.0);
        list.default_weight = 1.5;
        let rbl = Rbl::with_resolver(config(vec![list]), fake.clone()).unwrap();
        let findings = rbl
            .process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap();
        (findings, fake.asked())
    });
    let tag = |code: &str, weight| Tag {
        name: "RBL_ZEN".into(),
        evidence: format!("{code} from zen.example for 192.0.2.2"),
        weight: Some(weight),
    };
    assert_eq!(
        findings.tags,
        [
            tag("127.0.0.2", 4.0),
            tag("127.0.0.4", 3.0),
            tag("127.0.0.9", 1.5)
        ]
    );
    assert!(findings.recipient_tags.is_empty() && findings.verdict.is_none());
    assert!(
        asked.contains(&"2.2.0.192.zen.example".to_owned()),
        "{asked:?}"
    );
}

#[test]
fn error_codes_are_never_hits_but_are_counted() {
    let (findings, recorded) = run(async {
        let fake = Fake::default();
        fake.list(
            "2.2.0.192.zen.example",
            &[[127, 255, 255, 254], [192, 0, 2, 80]],
        );
        let mut list = ip_list("zen.example");
        list.errors = vec![Ipv4Addr::new(127, 255, 255, 254)];
        let rbl = Rbl::with_resolver(config(vec![list]), fake).unwrap();
        rbl.process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap()
    });
    assert!(findings.tags.is_empty(), "{:?}", findings.tags);
    // The configured error code and the code outside 127/8.
    assert_eq!(recorded.get(&errors("list_error_code")), 2.0);
}

#[test]
fn uri_hits_name_every_domain_with_that_code() {
    let (findings, _) = run(async {
        let fake = Fake::default();
        fake.list("example.com.uri.test", &[[127, 0, 0, 2]]);
        fake.list("example.net.uri.test", &[[127, 0, 0, 2]]);
        fake.list("1.2.0.192.uri.test", &[[127, 0, 0, 2]]);
        let rbl = Rbl::with_resolver(
            config(vec![uri_list("uri.test"), ip_list("zen.example")]),
            fake,
        )
        .unwrap();
        let body = Body::new(mail(
            "",
            "http://www.example.com/ http://a.example.net/ http://example.org/ http://192.0.2.1/\r\n",
        ));
        rbl.process(&analysis("192.0.2.2"), &body).await.unwrap()
    });
    assert_eq!(
        findings.tags,
        [Tag {
            name: "URIBL_URI_TEST".into(),
            evidence: "127.0.0.2 from uri.test for example.com, example.net, 192.0.2.1".into(),
            weight: Some(1.0),
        }]
    );
}

#[test]
fn ip_lists_are_not_asked_about_body_links_nor_uri_lists_about_the_client() {
    let (asked, _) = run(async {
        let fake = Fake::default();
        let rbl = Rbl::with_resolver(
            config(vec![uri_list("uri.test"), ip_list("zen.example")]),
            fake.clone(),
        )
        .unwrap();
        rbl.probed().await;
        let before = fake.asked().len();
        rbl.process(
            &analysis("192.0.2.2"),
            &Body::new(mail("", "http://example.com/\r\n")),
        )
        .await
        .unwrap();
        fake.asked()[before..].to_vec()
    });
    let mut asked = asked;
    asked.sort();
    assert_eq!(asked, ["2.2.0.192.zen.example", "example.com.uri.test"]);
}

#[test]
fn a_lookup_that_never_answers_is_unknown_within_the_timeout() {
    let ((findings, elapsed), recorded) = run(async {
        let fake = Fake::default();
        fake.hang
            .lock()
            .unwrap()
            .push("2.2.0.192.zen.example".into());
        let rbl = Rbl::with_resolver(config(vec![ip_list("zen.example")]), fake).unwrap();
        let start = Instant::now();
        let findings = rbl
            .process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap();
        (findings, start.elapsed())
    });
    assert!(findings.tags.is_empty());
    assert!(elapsed < Duration::from_millis(1000), "took {elapsed:?}");
    assert_eq!(recorded.get(&errors("timeout")), 1.0);
}

#[test]
fn servfail_is_unknown_and_counted() {
    let (findings, recorded) = run(async {
        let fake = Fake::default();
        fake.answer("2.2.0.192.zen.example", Answer::ServFail);
        let rbl = Rbl::with_resolver(config(vec![ip_list("zen.example")]), fake).unwrap();
        rbl.process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap()
    });
    assert!(findings.tags.is_empty());
    assert_eq!(recorded.get(&errors("servfail")), 1.0);
}

#[test]
fn a_list_that_lists_the_world_is_disabled_until_it_is_sane() {
    let ((before, during, after), recorded) = run(async {
        let fake = Fake::default();
        for name in [
            "1.0.0.127.world.test",
            "2.0.0.127.world.test",
            "2.2.0.192.world.test",
        ] {
            fake.list(name, &[[127, 0, 0, 2]]);
        }
        let rbl = Rbl::with_resolver(config(vec![ip_list("world.test")]), fake.clone()).unwrap();
        // The first message already waits for the first probe.
        let before = rbl
            .process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap();
        let during = rbl.is_disabled("world.test");
        fake.answer("1.0.0.127.world.test", Answer::NotListed);
        rbl.probe().await;
        let after = rbl
            .process(&analysis("192.0.2.2"), &Body::default())
            .await
            .unwrap();
        (before, during, after)
    });
    assert!(before.tags.is_empty(), "{:?}", before.tags);
    assert_eq!(during, Some(true));
    assert_eq!(after.tags.len(), 1, "{:?}", after.tags);
    assert_eq!(recorded.get(&disabled("world.test")), 0.0);
}

#[test]
fn the_disabled_gauge_is_set_by_the_probe() {
    let (state, recorded) = run(async {
        let fake = Fake::default();
        fake.list("1.0.0.127.world.test", &[[127, 0, 0, 2]]);
        fake.list("invalid.wild.test", &[[192, 0, 2, 80]]);
        fake.list("1.0.0.127.refusing.test", &[[127, 255, 255, 254]]);
        let mut refusing = ip_list("refusing.test");
        refusing.errors = vec![Ipv4Addr::new(127, 255, 255, 254)];
        let rbl = Rbl::with_resolver(
            config(vec![
                ip_list("world.test"),
                uri_list("wild.test"),
                refusing,
                ip_list("fine.test"),
            ]),
            fake,
        )
        .unwrap();
        rbl.probed().await;
        [
            "world.test",
            "wild.test",
            "refusing.test",
            "fine.test",
            "other.test",
        ]
        .map(|z| rbl.is_disabled(z))
    });
    assert_eq!(
        state,
        [Some(true), Some(true), Some(false), Some(false), None]
    );
    assert_eq!(recorded.get(&disabled("world.test")), 1.0);
    assert_eq!(recorded.get(&disabled("wild.test")), 1.0);
    assert_eq!(recorded.get(&disabled("refusing.test")), 0.0);
    assert_eq!(recorded.get(&disabled("fine.test")), 0.0);
}

#[test]
fn a_client_ip_that_is_no_address_asks_nothing() {
    let (findings, _) = run(async {
        let rbl =
            Rbl::with_resolver(config(vec![ip_list("zen.example")]), Fake::default()).unwrap();
        rbl.process(&analysis("unknown"), &Body::default())
            .await
            .unwrap()
    });
    assert!(findings.tags.is_empty());
}

// ----------------------------------------------------------------- config --

#[test]
fn the_stage_needs_a_runtime() {
    let err = Rbl::with_resolver(config(Vec::new()), Fake::default())
        .err()
        .unwrap();
    assert!(matches!(err, RblError::NoRuntime), "{err}");
}

#[test]
fn bad_settings_are_named() {
    let (errs, _) = run(async {
        let mut bad_weight = ip_list("zen.example");
        bad_weight.default_weight = f64::NAN;
        [
            config(vec![ip_list("bad zone")]),
            config(vec![ip_list("")]),
            config(vec![ip_list("zen.example"), ip_list("ZEN.example.")]),
            config(vec![bad_weight]),
            RblConfig {
                timeout_ms: 0,
                ..RblConfig::default()
            },
        ]
        .map(|c| {
            Rbl::with_resolver(c, Fake::default())
                .err()
                .map(|e| e.to_string())
        })
    });
    let errs: Vec<String> = errs.into_iter().map(|e| e.expect("an error")).collect();
    assert!(errs[0].contains("\"bad zone\""), "{}", errs[0]);
    assert!(errs[1].contains("empty"), "{}", errs[1]);
    assert!(errs[2].contains("twice"), "{}", errs[2]);
    assert!(errs[3].contains("weights of zen.example"), "{}", errs[3]);
    assert!(errs[4].contains("timeout_ms"), "{}", errs[4]);
    assert!(
        errs.iter().all(|e| e.starts_with(char::is_lowercase)),
        "{errs:?}"
    );
}

#[test]
fn resolver_errors_are_classified() {
    use hickory_resolver::{
        net::{DnsError, NetError, NoRecords},
        proto::op::{Query, ResponseCode},
    };
    let none = |code| {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
            Query::default(),
            code,
        )))
    };
    assert_eq!(
        resolve::classify(&none(ResponseCode::NXDomain)),
        Answer::NotListed
    );
    assert_eq!(
        resolve::classify(&none(ResponseCode::NoError)),
        Answer::NotListed
    );
    assert_eq!(
        resolve::classify(&none(ResponseCode::ServFail)),
        Answer::ServFail
    );
    assert_eq!(
        resolve::classify(&NetError::Dns(DnsError::ResponseCode(
            ResponseCode::ServFail
        ))),
        Answer::ServFail
    );
    assert_eq!(resolve::classify(&NetError::Timeout), Answer::Timeout);
    assert_eq!(
        resolve::classify(&NetError::Dns(DnsError::ResponseCode(
            ResponseCode::Refused
        ))),
        Answer::Error
    );
}

#[test]
fn the_documented_config_parses() {
    #[derive(serde::Deserialize)]
    struct Stages {
        rbl: RblConfig,
    }
    #[derive(serde::Deserialize)]
    struct File {
        stages: Stages,
    }
    let file: File = toml::from_str(
        r#"
        [stages.rbl]
        resolver = "127.0.0.1:5353"
        timeout_ms = 1500
        probe_interval = "30s"
        [[stages.rbl.lists]]
        zone = "zen.example"
        kind = "ip"
        weights = { "127.0.0.2" = 4.0, "127.0.0.4" = 3.0 }
        default_weight = 1.0
        errors = ["127.255.255.252", "127.255.255.254", "127.255.255.255"]
        tag = "RBL_ZEN"
        [[stages.rbl.lists]]
        zone = "dbl.example"
        kind = "uri"
        "#,
    )
    .unwrap();
    let rbl = file.stages.rbl;
    assert_eq!(rbl.resolver, "127.0.0.1:5353".parse().ok());
    assert_eq!(rbl.probe_interval, Duration::from_secs(30));
    assert_eq!(rbl.max_uri_domains, 20);
    let zen = &rbl.lists[0];
    assert_eq!(zen.weights.get(&Ipv4Addr::new(127, 0, 0, 4)), Some(&3.0));
    assert_eq!(zen.errors.len(), 3);
    assert_eq!(zen.tag_name(), "RBL_ZEN");
    let dbl = &rbl.lists[1];
    assert_eq!(
        (dbl.kind, dbl.default_weight, dbl.tag_name().as_str()),
        (ListKind::Uri, 1.0, "URIBL_DBL_EXAMPLE")
    );

    let bad_code = toml::from_str::<File>(
        "[[stages.rbl.lists]]\nzone = \"x.example\"\nweights = { \"127.0.0.x\" = 1.0 }\n",
    );
    assert!(bad_code.err().unwrap().to_string().contains("127.0.0.x"));
    let unknown = toml::from_str::<File>("[stages.rbl]\ntimeout = 5\n");
    assert!(unknown.err().unwrap().to_string().contains("unknown field"));
    assert_eq!(
        toml::from_str::<File>("[stages.rbl]\n").unwrap().stages.rbl,
        RblConfig::default()
    );
}

#[test]
fn a_stage_without_lists_starts_and_tags_nothing() {
    let (findings, _) = run(async {
        let rbl = Rbl::new(RblConfig::default()).unwrap();
        rbl.probed().await;
        assert!(format!("{rbl:?}").contains("Rbl"));
        rbl.process(
            &analysis("127.0.0.2"),
            &Body::new(mail("", "http://example.com/\r\n")),
        )
        .await
        .unwrap()
    });
    assert_eq!(findings, Findings::default());
}
