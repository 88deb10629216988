use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use super::*;

fn ip4(text: &str) -> Dataset {
    Dataset::parse(DatasetKind::Ip4Set, text).expect("valid ip4set")
}

fn a(d: &Dataset, q: &str) -> Option<Ipv4Addr> {
    d.query(q).map(|l| l.a)
}

fn txt(d: &Dataset, q: &str) -> Option<String> {
    d.query(q).and_then(|l| l.txt)
}

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn ip4set_syntax_forms() {
    let d = ip4("\
# comment
; comment too
$TTL 1h
:127.0.0.2:Listed, see http://bl.example.net/$
1.2.3.4
10.0.0.0/8
192.168.1
172.16-31
5.6.7.1-9
5.6.8.0-5.6.9.255
9/8 ; whole /8
!10.1.2.3
!10.2.0.0/16
1.2.3.5 :127.0.0.3:Own text for $
1.2.3.6 :4
1.2.3.7 :5:
1.2.3.8 Just text
");
    assert_eq!(d.ttl(), 3600);
    assert_eq!(a(&d, "4.3.2.1"), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(
        txt(&d, "4.3.2.1").as_deref(),
        Some("Listed, see http://bl.example.net/1.2.3.4")
    );
    assert!(d.query("3.3.2.1").is_none());
    assert!(d.query("1.1.1.10").is_some());
    assert!(d.query("3.2.1.10").is_none(), "excluded single address");
    assert!(d.query("4.2.1.10").is_some());
    assert!(d.query("9.9.2.10").is_none(), "excluded /16");
    assert!(d.query("255.1.168.192").is_some());
    assert!(d.query("0.2.168.192").is_none());
    assert!(d.query("0.0.16.172").is_some() && d.query("255.255.31.172").is_some());
    assert!(d.query("0.0.32.172").is_none() && d.query("255.255.15.172").is_none());
    assert!(d.query("0.7.6.5").is_none() && d.query("1.7.6.5").is_some());
    assert!(d.query("9.7.6.5").is_some() && d.query("10.7.6.5").is_none());
    assert!(d.query("0.8.6.5").is_some() && d.query("255.9.6.5").is_some());
    assert!(d.query("0.10.6.5").is_none());
    assert!(d.query("1.2.3.9").is_some());
    assert_eq!(
        d.query("5.3.2.1"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 0, 3),
            txt: Some("Own text for 1.2.3.5".into())
        })
    );
    assert_eq!(a(&d, "6.3.2.1"), Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert_eq!(
        txt(&d, "6.3.2.1").as_deref(),
        Some("Listed, see http://bl.example.net/1.2.3.6"),
        "`:4` keeps the default TXT"
    );
    assert_eq!(
        d.query("7.3.2.1"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 0, 5),
            txt: None
        }),
        "`:5:` means no TXT"
    );
    assert_eq!(
        d.query("8.3.2.1"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 0, 2),
            txt: Some("Just text".into())
        })
    );
    assert_eq!(d.len(), 13);
}

#[test]
fn ip4set_most_specific_level_wins_and_exclusions_win_ties() {
    let d = ip4("\
10.0.0.0/8 :2:eight
!10.1.0.0/16
10.1.2.0/24 :3:twenty-four
!10.1.2.0/24
10.1.2.3 :4:thirty-two
10.5.0.0/20 :5:
!10.5.4.0/22
");
    assert_eq!(a(&d, "1.1.1.10"), None, "/16 exclusion beats the /8");
    assert_eq!(a(&d, "1.1.3.10"), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(
        a(&d, "1.2.1.10"),
        None,
        "exclusion wins at the same /24 level"
    );
    assert_eq!(a(&d, "3.2.1.10"), Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert_eq!(a(&d, "1.1.2.10"), Some(Ipv4Addr::new(127, 0, 0, 2)));
    // /20 and /22 both land on the /24 level, where the exclusion wins.
    assert_eq!(a(&d, "1.3.5.10"), Some(Ipv4Addr::new(127, 0, 0, 5)));
    assert_eq!(a(&d, "1.4.5.10"), None);
    assert_eq!(a(&d, "1.8.5.10"), Some(Ipv4Addr::new(127, 0, 0, 5)));
}

#[test]
fn ip4set_first_line_wins_a_tie_between_values() {
    let d = ip4("1.2.3.4 :3:first\n1.2.3.0/24 :5:\n1.2.3.4 :4:second\n");
    assert_eq!(txt(&d, "4.3.2.1").as_deref(), Some("first"));
}

#[test]
fn txt_substitution_like_rbldnsd() {
    let d = ip4("\
$1 See http://www.example.com/bl
$2 for details
$1 ignored: the first assignment counts
127.0.0.5  $1/spammer/$ $2
127.0.0.6  This spammer wants some $$$$.  $1/$
127.0.0.7  unknown $7 stays
");
    assert_eq!(
        txt(&d, "5.0.0.127").as_deref(),
        Some("See http://www.example.com/bl/spammer/127.0.0.5 for details")
    );
    assert_eq!(
        txt(&d, "6.0.0.127").as_deref(),
        Some("This spammer wants some $$.  See http://www.example.com/bl/127.0.0.6")
    );
    assert_eq!(txt(&d, "7.0.0.127").as_deref(), Some("unknown $7 stays"));

    let d = ip4("\
$= See http://www.example.com/bl?$= ($) for details
127.0.0.5    r123
127.0.0.6
127.0.0.7    =See other blocklists for details about $
");
    assert_eq!(
        txt(&d, "5.0.0.127").as_deref(),
        Some("See http://www.example.com/bl?r123 (127.0.0.5) for details")
    );
    assert_eq!(
        txt(&d, "6.0.0.127").as_deref(),
        Some("See http://www.example.com/bl?127.0.0.6 (127.0.0.6) for details")
    );
    assert_eq!(
        txt(&d, "7.0.0.127").as_deref(),
        Some("See other blocklists for details about 127.0.0.7")
    );

    let long = "x".repeat(400);
    let d = ip4(&format!("1.2.3.4 {long}$\n"));
    assert_eq!(txt(&d, "4.3.2.1").map(|t| t.len()), Some(254));
}

#[test]
fn specials_are_exposed() {
    let d = ip4("\
$TTL 10m
$SOA 0 ns1.example.net. hostmaster.example.net. 42 2h 1h 1w 5m
$SOA 1 ignored.example. ignored.example. 1 1 1 1 1
$NS 1d ns1.example.net -ns2.example.net ns3.example.net.
$NS 1 ignored.example
$TIMESTAMP 2024:01:01
1.2.3.4
");
    assert_eq!(d.ttl(), 600);
    let soa = d.soa().expect("soa");
    assert_eq!(soa.ttl, 600, "a 0 TTL is the dataset's");
    assert_eq!(soa.mname, "ns1.example.net");
    assert_eq!(soa.rname, "hostmaster.example.net");
    assert_eq!(
        (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
        (42, 7200, 3600, 604_800, 300)
    );
    let ns = d.ns().expect("ns");
    assert_eq!(ns.ttl, 86400);
    assert_eq!(ns.names, ["ns1.example.net", "ns3.example.net"]);
    assert_eq!(ip4("1.2.3.4\n").ttl(), DEFAULT_TTL);
}

#[test]
fn maxrange4_skips_larger_entries() {
    let loaded = Dataset::parse_lenient(
        DatasetKind::Ip4Set,
        "bl",
        "$MAXRANGE4 /24\n10.0.0.0/16\n10.1.1.0/24\n$MAXRANGE4 /16\n10.2.0.0/16\n",
    );
    let d = &loaded.dataset;
    assert!(d.query("1.0.0.10").is_none());
    assert!(d.query("1.1.1.10").is_some());
    assert!(d.query("1.0.2.10").is_none(), "the limit cannot be raised");
    assert_eq!(loaded.skipped_lines, 2);
}

#[test]
fn errors_name_the_file_and_line() {
    let err = Dataset::parse(DatasetKind::Ip4Set, "1.2.3.4\n\n1.2.3.400\n").unwrap_err();
    assert_eq!(err.to_string(), "<input>, line 3: invalid address");
    for bad in [
        "127",
        "127.0.0.1/24",
        "1.2.3.4/33",
        "1.2.3.4-1.2.3.3",
        "1.2-1.2.3.4",
        "1.2.3.4x",
        "1.2.3.4 :0:",
        "1.2.3.4 :abc",
        "1.2.3.4 :5 trailing",
        "$BOGUS 1",
        "$TTL",
    ] {
        assert!(
            Dataset::parse(DatasetKind::Ip4Set, bad).is_err(),
            "{bad:?} should be refused"
        );
    }
    let loaded = Dataset::parse_lenient(DatasetKind::Ip4Set, "bl.txt", "bad\n1.2.3.4\n");
    assert_eq!(loaded.skipped_lines, 1);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "bl.txt, line 1: invalid address"
    );
    assert!(loaded.dataset.query("4.3.2.1").is_some());
}

#[test]
fn rfc5782_test_entries() {
    // A file without 127.0.0.2 still lists it; 127.0.0.1 is never listed.
    let d = ip4(":127.0.0.4:Listed $\n127.0.0.0/24\n!127.0.0.2\n1.2.3.4 :5:x\n");
    assert_eq!(
        d.query("2.0.0.127"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 0, 4),
            txt: Some("Listed 127.0.0.2".into())
        })
    );
    assert!(d.query("1.0.0.127").is_none());
    assert!(d.query("3.0.0.127").is_some());
    let empty = ip4("");
    assert!(empty.is_empty());
    assert_eq!(
        empty.query("2.0.0.127"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 0, 2),
            txt: None
        })
    );
    // When the file lists it, the file's value answers.
    let d = ip4("127.0.0.2 :10:file's own\n");
    assert_eq!(txt(&d, "2.0.0.127").as_deref(), Some("file's own"));

    let names = Dataset::parse(DatasetKind::Dnset, ".invalid\n").expect("dnset");
    assert!(names.query("test").is_some());
    assert!(names.query("TEST.").is_some());
    assert!(names.query("invalid").is_none());
    assert!(
        names.query("sub.invalid").is_some(),
        "only INVALID itself is reserved"
    );

    let v6 = Dataset::parse(DatasetKind::Ip6Trie, "::ffff:0:0/96\n").expect("ip6trie");
    let q = |ip: &str| {
        let ip: std::net::Ipv6Addr = ip.parse().expect("ip");
        nibbles(u128::from(ip))
    };
    assert!(v6.query(&q("::ffff:7f00:2")).is_some());
    assert!(v6.query(&q("::ffff:7f00:1")).is_none());
    assert!(v6.query(&q("::ffff:7f00:3")).is_some());
    assert!(Dataset::parse(DatasetKind::Ip6Trie, "")
        .expect("empty")
        .query(&q("::ffff:7f00:2"))
        .is_some());
}

fn nibbles(ip: u128) -> String {
    (0..32)
        .map(|i| format!("{:x}", (ip >> (4 * i)) & 0xf))
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn ip4_query_names_must_be_canonical() {
    let d = ip4("0.0.0.0/1\n128.0.0.0/1\n");
    assert!(d.query("1.2.3.4").is_some());
    assert!(d.query("1.2.3.4.").is_some());
    assert!(d.query("0.0.0.0").is_some() && d.query("255.255.255.255").is_some());
    for bad in [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.256",
        "1.2.3.-1",
        "1.2.3.+1",
        "1..3.4",
        "a.2.3.4",
        "1.2.3.4..",
        " 1.2.3.4",
        "1.2.3.0x1",
    ] {
        assert!(d.query(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn ip4set_answers_ipv6_forms_of_ipv4_like_rbldnsd() {
    let d = ip4("1.2.3.4 :3:$\n");
    let mapped = nibbles(0xffff_0102_0304);
    assert_eq!(txt(&d, &mapped).as_deref(), Some("1.2.3.4"));
    let six_to_four = nibbles((0x2002_0102_0304u128 << 80) | 1);
    assert!(d.query(&six_to_four).is_some());
    assert!(d.query(&nibbles(0x2001_0102_0304u128 << 80)).is_none());
}

#[test]
fn ip4trie_longest_prefix() {
    let d = Dataset::parse(
        DatasetKind::Ip4Trie,
        "10.0.0.0/8 :2:\n10.16.0.0/12 :3:\n!10.16.2.0/23\n10.16.2.128/25 :4:\n",
    )
    .expect("ip4trie");
    assert_eq!(a(&d, "1.2.1.10"), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(a(&d, "1.1.16.10"), Some(Ipv4Addr::new(127, 0, 0, 3)));
    assert_eq!(a(&d, "1.2.16.10"), None);
    assert_eq!(a(&d, "1.3.16.10"), None);
    assert_eq!(a(&d, "200.2.16.10"), Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert!(Dataset::parse(DatasetKind::Ip4Trie, "10.0.0.1-5\n").is_err());
}

#[test]
fn ip6trie() {
    let d = Dataset::parse(
        DatasetKind::Ip6Trie,
        "\
:127.0.1.2: Listed, see http://example.com/lookup?$
2001:21ab:c000/36
2001:21ab:def7:4242 :127.0.1.3: This one smells funny
2605:6001:42::/52
::1 # localhost
!2605:6001:42::bead
",
    )
    .expect("ip6trie");
    let q = |ip: &str| {
        d.query(&nibbles(u128::from(
            ip.parse::<std::net::Ipv6Addr>().unwrap(),
        )))
    };
    assert_eq!(
        q("2001:21ab:c000::5"),
        Some(Listing {
            a: Ipv4Addr::new(127, 0, 1, 2),
            txt: Some("Listed, see http://example.com/lookup?2001:21ab:c000::5".into())
        })
    );
    assert!(q("2001:21ab:b000::").is_none());
    assert_eq!(
        q("2001:21ab:def7:4242:1:0:0:1").map(|l| l.a),
        Some(Ipv4Addr::new(127, 0, 1, 3))
    );
    assert!(q("2605:6001:42:fff::1").is_some());
    assert!(q("2605:6001:42::bead").is_none());
    assert!(q("::1").is_some() && q("::2").is_none());
    // Upper-case nibbles are the same name.
    let upper = nibbles(0x2001_21ab_c000u128 << 80).to_uppercase();
    assert!(d.query(&upper).is_some());
    for bad in ["2001", "2001:db8:", "1::2::3/64 x", "12345::"] {
        assert!(
            Dataset::parse(DatasetKind::Ip6Trie, bad).is_err(),
            "{bad:?} should be refused"
        );
    }
    assert!(
        Dataset::parse(DatasetKind::Ip6Trie, "2001:db8::1/32").is_err(),
        "non-zero host part"
    );
}

#[test]
fn ip6_subst_text_matches_rbldnsd() {
    for (ip, text) in [
        (0u128, "::"),
        (1, "::1"),
        (1u128 << 112, "1::"),
        (0x0001_0000_0000_0004_0000_0000_0000_0008, "1:0:0:4::8"),
        (0xffff_7f00_0002, "::ffff:7f00:2"),
        (0x2001_0db8_0000_0001_0000_0000_0000_0001, "2001:db8:0:1::1"),
        (
            0x2001_0db8_0001_0002_0003_0004_0005_0006,
            "2001:db8:1:2:3:4:5:6",
        ),
    ] {
        let mut s = String::new();
        write_ip6(&mut s, ip);
        assert_eq!(s, text);
    }
}

#[test]
fn dnset_wildcards_and_exclusions() {
    let d = Dataset::parse(
        DatasetKind::Dnset,
        "\
:127.0.0.2:$ is listed
example.com
*.wild.example
.both.example :3:both $
!ok.both.example
!*.clean.both.example
dirty.clean.both.example
Mixed.CASE.example.
*.com :4:
!*.example.com
",
    )
    .expect("dnset");
    assert_eq!(
        txt(&d, "example.com").as_deref(),
        Some("example.com is listed")
    );
    assert!(d.query("EXAMPLE.com").is_some());
    assert!(
        d.query("www.example.com").is_none(),
        "nearest wildcard is an exclusion"
    );
    assert!(d.query("wild.example").is_none());
    assert_eq!(
        txt(&d, "a.b.wild.example").as_deref(),
        Some("wild.example is listed"),
        "$ is the listed name, as rbldnsd"
    );
    assert!(d.query("both.example").is_some());
    assert_eq!(
        txt(&d, "x.both.example").as_deref(),
        Some("both both.example")
    );
    assert!(d.query("ok.both.example").is_none());
    assert!(
        d.query("sub.ok.both.example").is_some(),
        "exact exclusions do not cover children"
    );
    assert!(d.query("a.clean.both.example").is_none());
    assert!(d.query("clean.both.example").is_some());
    assert!(d.query("dirty.clean.both.example").is_some());
    assert!(d.query("mixed.case.example").is_some());
    assert_eq!(a(&d, "other.com"), Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert!(d.query("com").is_none());
    for bad in ["", ".", "a..example.com", ".example.com"] {
        assert!(d.query(bad).is_none(), "{bad:?}");
    }
    for bad in ["*.", "!.", "a..b", "back\\slash.example"] {
        assert!(
            Dataset::parse(DatasetKind::Dnset, bad).is_err(),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn kinds_parse_from_config_names() {
    for kind in [
        DatasetKind::Ip4Set,
        DatasetKind::Ip4Trie,
        DatasetKind::Ip6Trie,
        DatasetKind::Dnset,
    ] {
        assert_eq!(kind.name().parse::<DatasetKind>().ok(), Some(kind));
    }
    assert!("ip4tset".parse::<DatasetKind>().is_err());
}

/// Random CIDRs and exclusions against a model of rbldnsd's rule written independently:
/// a /n entry lands on the level n rounds up to (8, 16, 24, 32), one key per block.
#[test]
fn ip4set_matches_a_model_on_random_data() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut text = String::new();
    // (level, key) -> (excluded, first value)
    let mut model: BTreeMap<(u32, u32), (bool, u8)> = BTreeMap::new();
    for _ in 0..20_000 {
        // Addresses concentrated in 10.0.0.0/14 so that entries overlap a lot.
        let addr = 0x0a00_0000 | (rng.below(1 << 18) as u32);
        let bits = [32, 32, 32, 30, 28, 26, 24, 24, 22, 20, 18, 16][rng.below(12) as usize];
        let addr = addr & parse::mask4(bits);
        let excluded = rng.below(5) == 0;
        let value = 2 + rng.below(3) as u8;
        let o = addr.to_be_bytes();
        let base = format!("{}.{}.{}.{}/{bits}", o[0], o[1], o[2], o[3]);
        if excluded {
            text.push_str(&format!("!{base}\n"));
        } else {
            text.push_str(&format!("{base} :{value}:\n"));
        }
        let level = bits.div_ceil(8) * 8;
        let block = 1u64 << (32 - level);
        let mut key = u64::from(addr);
        while key < u64::from(addr) + (1u64 << (32 - bits)) {
            let e = model
                .entry((level, key as u32))
                .or_insert((excluded, value));
            e.0 |= excluded;
            key += block;
        }
    }
    let d = ip4(&text);
    let lookup = |ip: u32| -> Option<u8> {
        for level in [32, 24, 16, 8] {
            if let Some(&(excluded, value)) = model.get(&(level, ip & parse::mask4(level))) {
                return (!excluded).then_some(value);
            }
        }
        None
    };
    let mut listed = 0;
    for _ in 0..100_000 {
        let ip = 0x0a00_0000 | (rng.below(1 << 18) as u32);
        let o = ip.to_be_bytes();
        let q = format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0]);
        let want = lookup(ip).map(|v| Ipv4Addr::new(127, 0, 0, v));
        assert_eq!(d.query_a(&q), want, "{q}");
        listed += usize::from(want.is_some());
    }
    assert!(
        listed > 10_000 && listed < 90_000,
        "the data exercises both answers"
    );
}

/// A million random single addresses: compact (under 24 bytes an entry), and every
/// lookup agrees with a `BTreeMap`.
#[test]
fn a_million_entries_stay_compact() {
    const N: usize = 1_000_000;
    let mut rng = Rng(42);
    let mut model: BTreeMap<u32, u8> = BTreeMap::new();
    let mut text = String::with_capacity(N * 24);
    text.push_str(":127.0.0.2:Listed, see https://bl.example.net/$\n");
    while model.len() < N {
        let ip = rng.next() as u32;
        if ip >> 24 == 127 || model.contains_key(&ip) {
            continue;
        }
        let value = 2 + (rng.below(3) as u8);
        model.insert(ip, value);
        let o = ip.to_be_bytes();
        if value == 2 {
            text.push_str(&format!("{}.{}.{}.{}\n", o[0], o[1], o[2], o[3]));
        } else {
            text.push_str(&format!("{}.{}.{}.{} :{value}\n", o[0], o[1], o[2], o[3]));
        }
    }
    let d = ip4(&text);
    drop(text);
    assert_eq!(d.len(), N);
    let per_entry = d.heap_bytes() as f64 / N as f64;
    assert!(per_entry < 24.0, "{per_entry:.1} bytes per entry");
    eprintln!(
        "{N} entries in {} ranges: {per_entry:.1} bytes per entry",
        d.stored_keys()
    );
    let started = std::time::Instant::now();
    let mut hits = HashMap::new();
    for i in 0..100_000u32 {
        // Half the probes are listed addresses, half random ones.
        let ip = if i % 2 == 0 {
            let k = rng.next() as u32;
            model.range(k..).next().map_or(k, |(&ip, _)| ip)
        } else {
            rng.next() as u32
        };
        let o = ip.to_be_bytes();
        let q = format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0]);
        let want = model.get(&ip).map(|&v| Ipv4Addr::new(127, 0, 0, v));
        let got = d.query(&q);
        assert_eq!(got.as_ref().map(|l| l.a), want, "{q}");
        if let Some(l) = got {
            let ip = Ipv4Addr::from(ip);
            assert_eq!(
                l.txt,
                Some(format!("Listed, see https://bl.example.net/{ip}"))
            );
        }
        *hits.entry(want.is_some()).or_insert(0) += 1;
    }
    // Loose and informative only: a binary search per probe, even in a debug build.
    eprintln!("100k lookups (with TXT) in {:?}", started.elapsed());
    assert!(hits[&true] >= 50_000);
}
