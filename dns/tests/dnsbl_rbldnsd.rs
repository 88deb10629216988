//! `pampa_dns::dnsbl` answers what rbldnsd answers for the same data files.
//!
//! Debian's rbldnsd serves four zones (ip4set, ip4trie, ip6trie, dnset) built from files
//! that use every feature the module supports; a small hand-written DNS client asks it A
//! and TXT for a few hundred names, and each answer is compared with `Dataset::query`.
//! The only differences allowed are the deliberate ones, listed in [`deliberate`].

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pampa_dns::dnsbl::{Dataset, DatasetKind, Listing};

const RBLDNSD: &str = "/usr/sbin/rbldnsd";

const IP4SET: &str = "\
$TTL 300
$SOA 0 ns1.example.net hostmaster.example.net 0 2h 1h 1w 5m
$NS 0 ns1.example.net ns2.example.net
$1 https://bl.example.net/lookup
$2 (policy)
:127.0.0.2:Listed, see $1?ip=$ $2
# single addresses, with every form of value
192.0.2.1
192.0.2.2 :127.0.0.3:Open relay $ (see $1)
192.0.2.3 :4
192.0.2.4 :5:
192.0.2.5 Spam source $$ at $ $9
192.0.2.6#comment right after the address
192.0.2.7 ; a comment after blanks
192.0.2.8:127.0.0.6:no blank before the value
192.0.2.9 :7:  text after blanks
192.0.2.255
192.0.2.0
! 192.0.2.10
; prefixes, CIDR and ranges
198.51.100
203.0.113.0/25
203.0.113.128/26 :8:
172.16-31 :13:a range of /16s
100.64.0.1-100.64.1.10
100.65.0.0-100.65.255.255
100.66.1-3
100.67.0.5-100.67.3.7 :14:
100.68.0.0-100.71.255.255
100.72.1.2-100.72.1.2
11/8 :15:
12.0.0.0/7
# overlaps and exclusions
10.0.0.0/8 :127.0.0.10:Big block $
!10.1.2.3
!10.2.0.0/16
10.2.3.0/24 :11:carved back in
!10.2.3.0/24
10.2.3.4 :12:single inside an excluded /24 $
10.16.0.0/12 :16:
!10.17.0.0/16
10.32.0.0/20 :17:
!10.32.4.0/22
10.32.5.0/24 :18:
10.32.6.7 :19:
127.0.0.0/24 :127.0.0.20:loopback $
# a new default for the rest of the file
:127.0.0.9:Later default for $
25.0.0.1
25.0.0.2 :10
25.0.0.3 =no base template here
";

const IP4TRIE: &str = "\
$TTL 1h
$= Listed: $= (see https://bl.example.net/$)
:127.0.0.2:generic
10.0.0.0/8 :2:ten
10.16.0.0/12 :3:
!10.16.2.0/23
10.16.2.128/25 :4:=own text for $
10.16.3.0/24 :5:
192.168.0.0/16
192.168.1.0/24 :6:$$ sign and $1
192.168.1.128/32 :7:
";

const IP6TRIE: &str = "\
$TTL 600
:127.0.1.2:Listed, see http://example.com/lookup?$
2001:21ab:c000/36
2001:21ab:def7:4242 :127.0.1.3:This one smells funny
2605:6001:42::/52
::1 # localhost
!2605:6001:42::bead
2001:db8::/32 :4:doc
2001:db8:1::/48 :5:
!2001:db8:1:2::/64
2001:db8:1:2:3::/80 :6:longer wins for $
fe80::/10 :7:
";

const DNSET: &str = "\
$TTL 120
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
.invalid
spam.example.net :127.0.0.5:Spam domain $1
";

/// Zone, format and file of each dataset.
const ZONES: [(&str, DatasetKind, &str, &str); 4] = [
    ("bl4.test", DatasetKind::Ip4Set, "bl4", IP4SET),
    ("t4.test", DatasetKind::Ip4Trie, "t4", IP4TRIE),
    ("bl6.test", DatasetKind::Ip6Trie, "bl6", IP6TRIE),
    ("dn.test", DatasetKind::Dnset, "dn", DNSET),
];

const A: u16 = 1;
const TXT: u16 = 16;

/// rbldnsd in the foreground, killed on drop, with its data directory removed.
struct Rbldnsd {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Rbldnsd {
    fn start(dir: &Path) -> Rbldnsd {
        assert!(
            Path::new(RBLDNSD).exists(),
            "{RBLDNSD} is missing: install Debian's rbldnsd package (ops/test.sh does)"
        );
        let specs: Vec<String> = ZONES
            .iter()
            .map(|(zone, kind, file, _)| format!("{zone}:{kind}:{file}"))
            .collect();
        let log = dir.join("rbldnsd.log");
        // The port is free when asked, but another process may take it before rbldnsd
        // binds; rbldnsd then exits at once, and we try another.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let out = fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(RBLDNSD);
            cmd.arg("-n");
            // rbldnsd refuses to run as root, and then reads the files as this user.
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            let child = cmd
                .args(["-c", "0", "-b", &format!("127.0.0.1/{port}"), "-w"])
                .arg(dir)
                .args(&specs)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out)
                .spawn()
                .expect("rbldnsd starts");
            let mut server = Rbldnsd {
                child,
                addr,
                dir: dir.to_path_buf(),
                log: log.clone(),
            };
            match server.wait_until_it_answers() {
                Ok(()) => return server,
                Err(true) => {
                    eprintln!("rbldnsd on port {port} exited at start:\n{}", server.log());
                    // Keep the directory for the next try.
                    server.dir = PathBuf::new();
                }
                Err(false) => panic!("rbldnsd did not answer in 10 s:\n{}", server.log()),
            }
        }
        panic!("rbldnsd exited at start five times; see its logs above");
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls with a real query until an answer comes (`Err(true)`: it exited).
    fn wait_until_it_answers(&mut self) -> Result<(), bool> {
        let client = Client::new(self.addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(true);
            }
            if client.try_ask("example.com.dn.test", A).is_some() {
                return Ok(());
            }
        }
        Err(false)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// One answer as the wire gave it.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    nxdomain: bool,
    a: Vec<Ipv4Addr>,
    txt: Vec<String>,
    ttls: Vec<u32>,
}

/// A DNS client written by hand, so the comparison does not depend on the resolver code
/// under test.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    id: std::cell::Cell<u16>,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Client {
            socket,
            server,
            id: std::cell::Cell::new(1),
        }
    }

    fn ask(&self, name: &str, qtype: u16) -> Answer {
        for _ in 0..10 {
            if let Some(answer) = self.try_ask(name, qtype) {
                return answer;
            }
        }
        panic!("no answer from rbldnsd for {name} type {qtype}");
    }

    fn try_ask(&self, name: &str, qtype: u16) -> Option<Answer> {
        let id = self.id.get().wrapping_add(1);
        self.id.set(id);
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        self.socket.send_to(&q, self.server).ok()?;
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let Ok((len, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            if len >= 12 && buf[..2] == id.to_be_bytes() {
                return parse_answer(&buf[..len], q.len());
            }
        }
        None
    }
}

fn parse_answer(r: &[u8], question_end: usize) -> Option<Answer> {
    let rcode = r[3] & 0x0f;
    let mut answer = Answer {
        nxdomain: rcode == 3,
        ..Answer::default()
    };
    assert!(rcode == 0 || rcode == 3, "unexpected rcode {rcode}");
    let count = u16::from_be_bytes([r[6], r[7]]);
    let mut i = question_end;
    for _ in 0..count {
        // The owner name: labels, ending in a zero or a compression pointer.
        loop {
            let len = *r.get(i)?;
            if len & 0xc0 == 0xc0 {
                i += 2;
                break;
            }
            i += 1 + len as usize;
            if len == 0 {
                break;
            }
        }
        let field = |at: usize| u16::from_be_bytes([r[at], r[at + 1]]);
        let (rtype, ttl, rdlen) = (
            field(i),
            u32::from_be_bytes([r[i + 4], r[i + 5], r[i + 6], r[i + 7]]),
            field(i + 8) as usize,
        );
        let data = r.get(i + 10..i + 10 + rdlen)?;
        i += 10 + rdlen;
        answer.ttls.push(ttl);
        match rtype {
            A => answer
                .a
                .push(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            TXT => {
                let mut text = Vec::new();
                let mut k = 0;
                while k < data.len() {
                    let n = data[k] as usize;
                    text.extend_from_slice(&data[k + 1..k + 1 + n]);
                    k += 1 + n;
                }
                answer.txt.push(String::from_utf8_lossy(&text).into_owned());
            }
            _ => {}
        }
    }
    Some(answer)
}

/// What rbldnsd's two answers (A, TXT) say, in `Listing` form.
fn rbldnsd_listing(client: &Client, fqdn: &str) -> Result<Option<Listing>, String> {
    let a = client.ask(fqdn, A);
    let txt = client.ask(fqdn, TXT);
    if a.nxdomain != txt.nxdomain {
        return Err(format!("A and TXT disagree: {a:?} / {txt:?}"));
    }
    if a.nxdomain {
        return Ok(None);
    }
    match (a.a.as_slice(), txt.txt.as_slice()) {
        ([ip], []) => Ok(Some(Listing { a: *ip, txt: None })),
        ([ip], [t]) => Ok(Some(Listing {
            a: *ip,
            txt: Some(t.clone()),
        })),
        _ => Err(format!("several records: {a:?} / {txt:?}")),
    }
}

/// The differences documented in `dnsbl`'s module doc: the RFC 5782 test entries, and
/// canonical IPv4 labels. Returns what each side must answer instead of agreeing.
fn deliberate(zone: &str, name: &str) -> Option<(&'static str, bool, bool)> {
    // (why, rbldnsd lists it, we list it)
    let ip4 = zone == "bl4.test" || zone == "t4.test";
    match name {
        "1.0.0.127" if zone == "bl4.test" => {
            Some(("RFC 5782: 127.0.0.1 is never listed", true, false))
        }
        "2.0.0.127" if zone == "t4.test" => {
            Some(("RFC 5782: 127.0.0.2 is always listed", false, true))
        }
        "test" if zone == "dn.test" => Some(("RFC 5782: TEST is always listed", false, true)),
        "invalid" if zone == "dn.test" => Some(("RFC 5782: INVALID is never listed", true, false)),
        _ if zone == "bl6.test" && name == nibbles(0xffff_7f00_0002) => {
            Some(("RFC 5782: ::FFFF:7F00:2 is always listed", false, true))
        }
        _ if ip4 && name.split('.').any(|l| l.len() > 1 && l.starts_with('0')) => {
            Some(("leading zeros are not an IPv4 label", true, false))
        }
        _ => None,
    }
}

fn nibbles(ip: u128) -> String {
    (0..32)
        .map(|i| format!("{:x}", (ip >> (4 * i)) & 0xf))
        .collect::<Vec<_>>()
        .join(".")
}

fn rev4(ip: u32) -> String {
    let o = ip.to_be_bytes();
    format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
}

fn v4(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().expect("address"))
}

fn v6(s: &str) -> u128 {
    u128::from(s.parse::<Ipv6Addr>().expect("address"))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// IPv4 probes: each edge of each entry and its neighbours, plus random addresses in
/// the blocks the files use.
fn ip4_probes(edges: &[&str], blocks: &[(&str, u32)], rng: &mut Rng) -> Vec<String> {
    let mut ips = Vec::new();
    for e in edges {
        let ip = v4(e);
        ips.extend([ip.wrapping_sub(1), ip, ip.wrapping_add(1)]);
    }
    for (base, bits) in blocks {
        for _ in 0..12 {
            let host = if *bits == 32 {
                0
            } else {
                (rng.next() as u32) >> bits
            };
            ips.push(v4(base) | host);
        }
    }
    ips.sort_unstable();
    ips.dedup();
    ips.into_iter().map(rev4).collect()
}

#[test]
fn dnsbl_answers_like_rbldnsd() {
    let dir = std::env::temp_dir().join(format!("pampa-dnsbl-rbldnsd-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    // rbldnsd drops to `nobody` before it reads, so everything must be world-readable.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut datasets = Vec::new();
    for (zone, kind, file, text) in ZONES {
        let path = dir.join(file);
        fs::write(&path, text).expect("write dataset");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        // Strict: every line of these files must be valid here, as rbldnsd checks below.
        let dataset = Dataset::load(kind, &path).unwrap_or_else(|e| panic!("{zone}: {e}"));
        datasets.push((zone, dataset));
    }
    let server = Rbldnsd::start(&dir);
    let log = server.log();
    for word in [
        "invalid",
        "unrecognized",
        "ignored",
        "truncated",
        "duplicated",
    ] {
        assert!(
            !log.contains(word),
            "rbldnsd skipped a line we accept:\n{log}"
        );
    }
    let client = Client::new(server.addr);
    let mut rng = Rng(0x5eed);

    let mut probes: Vec<(&str, Vec<String>)> = Vec::new();
    let mut bl4 = ip4_probes(
        &[
            "192.0.2.1",
            "192.0.2.5",
            "192.0.2.9",
            "198.51.100.0",
            "198.51.100.255",
            "203.0.113.0",
            "203.0.113.127",
            "203.0.113.128",
            "203.0.113.191",
            "172.16.0.0",
            "172.31.255.255",
            "100.64.0.1",
            "100.64.1.10",
            "100.64.0.255",
            "100.65.0.0",
            "100.65.255.255",
            "100.66.1.0",
            "100.66.3.255",
            "100.67.0.5",
            "100.67.3.7",
            "100.67.1.0",
            "100.68.0.0",
            "100.71.255.255",
            "100.72.1.2",
            "11.0.0.0",
            "11.255.255.255",
            "12.0.0.0",
            "13.255.255.255",
            "10.0.0.0",
            "10.1.2.3",
            "10.2.0.0",
            "10.2.255.255",
            "10.2.3.0",
            "10.2.3.4",
            "10.2.3.255",
            "10.16.0.0",
            "10.17.0.0",
            "10.17.255.255",
            "10.31.255.255",
            "10.32.0.0",
            "10.32.4.0",
            "10.32.5.0",
            "10.32.6.7",
            "10.32.7.255",
            "10.32.15.255",
            "127.0.0.1",
            "127.0.0.255",
            "25.0.0.2",
            "0.0.0.0",
            "255.255.255.255",
        ],
        &[
            ("192.0.2.0", 24),
            ("10.0.0.0", 8),
            ("10.2.0.0", 16),
            ("10.32.0.0", 20),
            ("100.64.0.0", 10),
            ("172.0.0.0", 8),
            ("12.0.0.0", 7),
            ("127.0.0.0", 24),
            ("1.0.0.0", 0),
        ],
        &mut rng,
    );
    // Not IPv4 names, or not canonical ones, and the IPv6 forms rbldnsd maps to IPv4.
    bl4.extend(
        [
            "1.2.0.192",
            "2.0.192",
            "1.2.0.192.1",
            "256.2.0.192",
            "x.2.0.192",
            "01.2.0.192",
            "001.2.0.192",
            "1.02.0.192",
            "4.3.2.10",
        ]
        .map(String::from),
    );
    for ip in [
        v6("::ffff:192.0.2.2"),
        v6("::ffff:10.2.3.4"),
        v6("::ffff:10.2.3.5"),
        v6("2002:c000:0205::1"),
        v6("2001:c000:0205::1"),
    ] {
        bl4.push(nibbles(ip));
    }
    probes.push(("bl4.test", bl4));
    probes.push((
        "t4.test",
        ip4_probes(
            &[
                "10.0.0.0",
                "10.16.0.0",
                "10.31.255.255",
                "10.16.2.0",
                "10.16.3.255",
                "10.16.2.128",
                "10.16.3.0",
                "192.168.0.0",
                "192.168.1.0",
                "192.168.1.128",
                "127.0.0.2",
            ],
            &[("10.16.0.0", 12), ("192.168.0.0", 16)],
            &mut rng,
        ),
    ));
    let mut bl6 = Vec::new();
    for edge in [
        "2001:21ab:c000::",
        "2001:21ab:cfff:ffff:ffff:ffff:ffff:ffff",
        "2001:21ab:def7:4242::",
        "2001:21ab:def7:4242:ffff:ffff:ffff:ffff",
        "2605:6001:42::",
        "2605:6001:42:fff:ffff:ffff:ffff:ffff",
        "2605:6001:42::bead",
        "::1",
        "2001:db8::",
        "2001:db8:1::",
        "2001:db8:1:2::",
        "2001:db8:1:2:3::",
        "2001:db8:1:2:3:ffff:ffff:ffff",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "fe80::",
        "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:7f00:1",
        "::ffff:7f00:2",
    ] {
        let ip = v6(edge);
        for ip in [ip.wrapping_sub(1), ip, ip.wrapping_add(1)] {
            bl6.push(nibbles(ip));
        }
    }
    for base in ["2001:db8:1:2::", "2605:6001:42::", "2001:21ab:c000::"] {
        for _ in 0..8 {
            let host = u128::from(rng.next()) | (u128::from(rng.next()) << 64);
            bl6.push(nibbles(v6(base) | (host >> 64)));
        }
    }
    let short = nibbles(v6("2001:db8::1"));
    bl6.push(short[2..].to_string());
    bl6.push(short.to_uppercase());
    probes.push(("bl6.test", bl6));
    let mut dn: Vec<String> = [
        "example.com",
        "www.example.com",
        "a.www.example.com",
        "wild.example",
        "x.wild.example",
        "a.b.wild.example",
        "both.example",
        "x.both.example",
        "ok.both.example",
        "sub.ok.both.example",
        "clean.both.example",
        "a.clean.both.example",
        "b.a.clean.both.example",
        "dirty.clean.both.example",
        "x.dirty.clean.both.example",
        "mixed.case.example",
        "MIXED.case.EXAMPLE",
        "other.com",
        "a.b.other.com",
        "com",
        "example",
        "net",
        "spam.example.net",
        "x.spam.example.net",
        "invalid",
        "sub.invalid",
        "test",
        "nothing.org",
        "Example.COM",
    ]
    .map(String::from)
    .to_vec();
    for base in [
        "wild.example",
        "both.example",
        "clean.both.example",
        "com",
        "example.com",
    ] {
        for _ in 0..6 {
            dn.push(format!("r{}.{base}", rng.next() % 1000));
        }
    }
    probes.push(("dn.test", dn));

    let mut compared = 0;
    let mut differences = Vec::new();
    for (zone, names) in &probes {
        let dataset = &datasets.iter().find(|(z, _)| z == zone).expect("zone").1;
        for name in names {
            let fqdn = format!("{name}.{zone}");
            let theirs = match rbldnsd_listing(&client, &fqdn) {
                Ok(l) => l,
                Err(e) => {
                    differences.push(format!("{fqdn}: rbldnsd: {e}"));
                    continue;
                }
            };
            let ours = dataset.query(name);
            compared += 1;
            if let Some((why, they_list, we_list)) = deliberate(zone, name) {
                if theirs.is_some() != they_list || ours.is_some() != we_list {
                    differences.push(format!(
                        "{fqdn}: expected the documented difference ({why}), \
                         got rbldnsd {theirs:?}, ours {ours:?}"
                    ));
                }
                continue;
            }
            if theirs != ours {
                differences.push(format!("{fqdn}: rbldnsd {theirs:?}, ours {ours:?}"));
            }
            if ours.is_some() {
                let ttls = client.ask(&fqdn, A).ttls;
                if ttls.first() != Some(&dataset.ttl()) {
                    differences.push(format!("{fqdn}: TTL {ttls:?}, ours {}", dataset.ttl()));
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(compared > 300, "only {compared} names compared");
    eprintln!("{compared} names compared with rbldnsd, all alike");
}
