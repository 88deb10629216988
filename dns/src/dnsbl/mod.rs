//! DNSBL datasets in rbldnsd's formats, held compactly and answered per RFC 5782.
//!
//! The server strips the zone from a query name and asks [`Dataset::query`] about the
//! rest: `2.0.0.127` for an IPv4 list, 32 reversed nibbles for an IPv6 list, or
//! `spam.example.com` for a domain list. Everything costly happens at load time, so a
//! query is one binary search (two or three for a wildcard domain), with no allocation
//! unless TXT text is asked for.
//!
//! # Formats
//! The file syntax is rbldnsd's (see `man rbldnsd`), so the same file serves both:
//! - `ip4set`: single addresses, prefixes (`127.0.0` is a /24), CIDR (`10.0.0.0/8`,
//!   `10/8`) and ranges (`10.0.0.1-10.0.0.9`, `10.0.0.1-9`, `10.1-10.3`). Overlaps resolve
//!   as in rbldnsd: the entry at the finest of the /32, /24, /16 and /8 levels wins, and at
//!   one level an exclusion (`!entry`) wins.
//! - `ip4trie`: CIDR only; the longest prefix wins, exclusions included.
//! - `ip6trie`: IPv6 CIDR (`2001:db8::/32`, `2001:db8` meaning /32, `::1`); the longest
//!   prefix wins. IPv6 entries live in their own dataset, as in rbldnsd, rather than mixed
//!   into an `ip4set` file: rbldnsd would refuse such lines, and the two could then no
//!   longer serve the same file.
//! - `dnset`: `example.com` (the name only), `*.example.com` (its subdomains only),
//!   `.example.com` (both). An exact entry for the queried name decides first (an exact
//!   exclusion means not listed); otherwise the nearest parent with a wildcard entry does.
//!
//! In every format: `#` and `;` start comments; `:A:TXT` sets the default value for the
//! rest of the file (`:2:` is A 127.0.0.2 with no TXT); an entry may carry its own value
//! (`1.2.3.4 :127.0.0.3:text`, `1.2.3.4 :3` keeping the default TXT, `1.2.3.4 text`
//! keeping the default A). `$TTL`, `$SOA` and `$NS` are parsed and exposed
//! ([`Dataset::ttl`], [`Dataset::soa`], [`Dataset::ns`]); `$MAXRANGE4`, `$0`..`$9`
//! substitution variables and the `$=` base template work as in rbldnsd; `$TIMESTAMP` and
//! `$ENT` are accepted and ignored. In TXT, `$` becomes the queried address (or, for
//! dnset, the listed name that matched, as rbldnsd does), `$$` a dollar sign.
//!
//! # RFC 5782 test entries
//! rbldnsd serves only what the file says. RFC 5782 §5 says a DNSxL MUST list 127.0.0.2
//! (`::FFFF:7F00:2` for IPv6, `TEST` for names) and MUST NOT list 127.0.0.1
//! (`::FFFF:7F00:1`, `INVALID`), and clients probe exactly that to see whether a list
//! works. So those answers are fixed here whatever the file says: the positive test entry
//! answers with the file's entry if it lists one, otherwise with the default value in
//! effect at the end of the file; the negative one is never listed.
//!
//! # Loading
//! [`Dataset::parse`] and [`Dataset::load`] are strict: a line rbldnsd would skip with a
//! warning is an error naming the file and line, so a typo in a locally kept list is
//! caught. [`Dataset::load_lenient`] skips such lines as rbldnsd does and reports them,
//! which suits mirrors of third-party data, where one bad line must not stop a reload.
//!
//! As in rbldnsd, an IPv4 list also answers the IPv6 forms of an IPv4 address:
//! 32 nibbles of `::ffff:a.b.c.d` or of `2002:aabb:ccdd::/48` (6to4).
//!
//! # Differences from rbldnsd
//! Checked against rbldnsd itself by `dns/tests/dnsbl_rbldnsd.rs`. Besides the test
//! entries:
//! - an IPv4 query label with a leading zero (`02.0.0.127`) is not an address here
//!   (rbldnsd reads it as 2): a reverse name is never written that way;
//! - where several entries with different values tie (the same ip4set level, the same
//!   dnset name), rbldnsd answers with all their values, and this with the first line's;
//! - a CRLF line ending is a line ending (rbldnsd keeps the `\r` in TXT text);
//! - backslash escapes in dnset names are refused (the query side sees dotted text);
//! - ip4trie and ip6trie accept a duplicated prefix silently (the first wins, as in
//!   rbldnsd, which also warns);
//! - gzip-compressed files are not read.

mod names;
mod parse;
mod ranges;
#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use names::NameSet;
use parse::Builder;
use ranges::RangeTable;

/// rbldnsd's default TTL (35 minutes), used when the file has no `$TTL`.
pub const DEFAULT_TTL: u32 = 2100;

/// Longest TXT string answered; rbldnsd cuts substituted TXT at 254 bytes.
const MAX_TXT: usize = 254;

/// Errors of loading a dataset. Every one is permanent: the file must change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsblError {
    /// The file could not be read.
    #[error("cannot read dnsbl dataset {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not valid in the dataset's format.
    #[error("{file}, line {line}: {message}")]
    Syntax {
        /// The file's path, or `<input>` for text parsed directly.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file is gzip-compressed, which rbldnsd reads and this does not.
    #[error("{0}: compressed dnsbl datasets are not supported, decompress it first")]
    Compressed(PathBuf),
    /// The format name is not one of ours.
    #[error("unknown dnsbl dataset format {0:?} (expected ip4set, ip4trie, ip6trie or dnset)")]
    UnknownKind(String),
}

/// Which of rbldnsd's dataset formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatasetKind {
    /// `ip4set`: IPv4 addresses, prefixes, CIDR and ranges.
    Ip4Set,
    /// `ip4trie`: IPv4 CIDR, longest prefix wins.
    Ip4Trie,
    /// `ip6trie`: IPv6 CIDR, longest prefix wins.
    Ip6Trie,
    /// `dnset`: domain names and wildcards.
    Dnset,
}

impl DatasetKind {
    /// rbldnsd's name for the format, as in `format = "ip4set"`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Ip4Set => "ip4set",
            DatasetKind::Ip4Trie => "ip4trie",
            DatasetKind::Ip6Trie => "ip6trie",
            DatasetKind::Dnset => "dnset",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = DnsblError;
    fn from_str(s: &str) -> Result<Self, DnsblError> {
        match s.to_ascii_lowercase().as_str() {
            "ip4set" => Ok(DatasetKind::Ip4Set),
            "ip4trie" => Ok(DatasetKind::Ip4Trie),
            "ip6trie" => Ok(DatasetKind::Ip6Trie),
            "dnset" => Ok(DatasetKind::Dnset),
            _ => Err(DnsblError::UnknownKind(s.to_string())),
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a listed name answers: the A record, and the TXT record if the entry has text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The A record (127.0.0.x by convention).
    pub a: Ipv4Addr,
    /// The TXT record, `$` already replaced; `None` when the entry has no text.
    pub txt: Option<String>,
}

/// The `$SOA` line of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    /// TTL of the SOA record (a 0 in the file is the dataset's TTL).
    pub ttl: u32,
    /// Primary name server, without the trailing dot.
    pub mname: String,
    /// Responsible mailbox, as a domain name, without the trailing dot.
    pub rname: String,
    /// Serial. A 0 in the file means "the data's modification time";
    /// [`Dataset::load`] fills that in, [`Dataset::parse`] leaves 0.
    pub serial: u32,
    /// Refresh, in seconds.
    pub refresh: u32,
    /// Retry, in seconds.
    pub retry: u32,
    /// Expire, in seconds.
    pub expire: u32,
    /// Minimum (negative-caching) TTL, in seconds.
    pub minimum: u32,
}

/// The `$NS` line of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRecords {
    /// TTL of the NS records.
    pub ttl: u32,
    /// Name server names (at most 32, as rbldnsd), without trailing dots.
    pub names: Vec<String>,
}

/// A lenient load: the dataset, and what was skipped.
#[derive(Debug)]
pub struct Loaded {
    /// The dataset, built from every valid line.
    pub dataset: Dataset,
    /// The first bad lines (at most 100), each naming its file and line.
    pub warnings: Vec<DnsblError>,
    /// How many lines were skipped in all.
    pub skipped_lines: usize,
}

/// An interned A value and TXT template. DNSBLs have few distinct values, so entries hold
/// an index into a short vector of these rather than the value itself.
#[derive(Debug)]
struct Value {
    a: Ipv4Addr,
    txt: Box<str>,
}

#[derive(Debug)]
enum Data {
    V4(RangeTable<u32>),
    V6(RangeTable<u128>),
    Names { exact: NameSet, wild: NameSet },
}

/// What `$` stands for in the answer's TXT.
enum Subject<'a> {
    V4(u32),
    V6(u128),
    Name(&'a str),
}

/// One DNSBL dataset, loaded and ready to answer.
#[derive(Debug)]
pub struct Dataset {
    kind: DatasetKind,
    ttl: Option<u32>,
    soa: Option<Soa>,
    ns: Option<NsRecords>,
    subst: [Option<Box<str>>; 10],
    base_template: Option<Box<str>>,
    values: Vec<Value>,
    /// The value the RFC 5782 test entry answers with when the file lists none.
    test_value: u32,
    entries: usize,
    data: Data,
}

const IP4_TEST: u32 = 0x7f00_0002;
const IP4_NEVER: u32 = 0x7f00_0001;
const V4_MAPPED: u128 = 0xffff_0000_0000;

impl Dataset {
    /// Parses dataset text strictly: any line rbldnsd would skip with a warning is an
    /// error here, naming the line.
    pub fn parse(kind: DatasetKind, text: &str) -> Result<Dataset, DnsblError> {
        let mut b = Builder::new(kind, true);
        b.add_source("<input>", text)?;
        Ok(b.finish())
    }

    /// Parses dataset text as rbldnsd does: bad lines are skipped and reported.
    pub fn parse_lenient(kind: DatasetKind, name: &str, text: &str) -> Loaded {
        let mut b = Builder::new(kind, false);
        // A lenient builder reports line errors as warnings and never fails.
        let _ = b.add_source(name, text);
        let (warnings, skipped_lines) = (std::mem::take(&mut b.warnings), b.skipped);
        Loaded {
            dataset: b.finish(),
            warnings,
            skipped_lines,
        }
    }

    /// Loads a file strictly (see [`Dataset::parse`]).
    pub fn load(kind: DatasetKind, path: impl AsRef<Path>) -> Result<Dataset, DnsblError> {
        Self::load_files(kind, &[path.as_ref()], true).map(|l| l.dataset)
    }

    /// Loads several files as one dataset, rbldnsd's `zone:type:file,file`, skipping bad
    /// lines as rbldnsd does. A default value (`:A:TXT`) lasts to the end of its file;
    /// `$SOA`, `$NS` and substitution variables are taken from the first file that sets
    /// them; an exclusion in one file applies to the whole dataset.
    pub fn load_lenient<P: AsRef<Path>>(
        kind: DatasetKind,
        paths: &[P],
    ) -> Result<Loaded, DnsblError> {
        Self::load_files(kind, paths, false)
    }

    fn load_files<P: AsRef<Path>>(
        kind: DatasetKind,
        paths: &[P],
        strict: bool,
    ) -> Result<Loaded, DnsblError> {
        let mut b = Builder::new(kind, strict);
        let mut newest = 0u64;
        for path in paths {
            let path = path.as_ref();
            let io = |source| DnsblError::Io {
                path: path.to_path_buf(),
                source,
            };
            let bytes = std::fs::read(path).map_err(io)?;
            if bytes.starts_with(&[0x1f, 0x8b]) {
                return Err(DnsblError::Compressed(path.to_path_buf()));
            }
            let mtime = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            newest = newest.max(mtime);
            // rbldnsd works on bytes; TXT text that is not UTF-8 is kept as lossily as
            // needed rather than failing the whole load.
            let text = String::from_utf8_lossy(&bytes);
            b.add_source(&path.display().to_string(), &text)?;
        }
        let (warnings, skipped_lines) = (std::mem::take(&mut b.warnings), b.skipped);
        let mut dataset = b.finish();
        if let Some(soa) = dataset.soa.as_mut().filter(|s| s.serial == 0) {
            soa.serial = u32::try_from(newest).unwrap_or(u32::MAX);
        }
        Ok(Loaded {
            dataset,
            warnings,
            skipped_lines,
        })
    }

    /// The dataset's format.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// TTL for answers: the file's `$TTL`, or [`DEFAULT_TTL`].
    pub fn ttl(&self) -> u32 {
        self.ttl.unwrap_or(DEFAULT_TTL)
    }

    /// The file's `$SOA`, if it has one (only the first counts).
    pub fn soa(&self) -> Option<&Soa> {
        self.soa.as_ref()
    }

    /// The file's `$NS`, if it has one (only the first line counts).
    pub fn ns(&self) -> Option<&NsRecords> {
        self.ns.as_ref()
    }

    /// Number of entry lines loaded, listings and exclusions.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the file had no entries (the RFC 5782 test entry still answers).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Heap memory held by the lookup structures and values, in bytes.
    pub fn heap_bytes(&self) -> usize {
        let data = match &self.data {
            Data::V4(t) => t.heap_bytes(),
            Data::V6(t) => t.heap_bytes(),
            Data::Names { exact, wild } => exact.heap_bytes() + wild.heap_bytes(),
        };
        let values: usize = self.values.iter().map(|v| v.txt.len()).sum::<usize>()
            + self.values.capacity() * std::mem::size_of::<Value>();
        let subst: usize = self.subst.iter().flatten().map(|s| s.len()).sum::<usize>()
            + self.base_template.as_ref().map_or(0, |s| s.len());
        data + values + subst
    }

    /// Number of disjoint ranges (IP formats) or names (dnset) in the lookup structures.
    pub fn stored_keys(&self) -> usize {
        match &self.data {
            Data::V4(t) => t.len(),
            Data::V6(t) => t.len(),
            Data::Names { exact, wild } => exact.len() + wild.len(),
        }
    }

    /// Looks up a query name with the zone removed (`2.0.0.127`, 32 nibbles, or
    /// `spam.example.com`), case-insensitively; a single trailing dot is allowed. Anything
    /// that is not a well-formed name for this format is simply not listed.
    pub fn query(&self, labels_under_zone: &str) -> Option<Listing> {
        self.find(labels_under_zone, |value, subject| Listing {
            a: value.a,
            txt: self.render(&value.txt, subject),
        })
    }

    /// Like [`Dataset::query`], for A queries: no TXT is built, so nothing is allocated.
    pub fn query_a(&self, labels_under_zone: &str) -> Option<Ipv4Addr> {
        self.find(labels_under_zone, |value, _| value.a)
    }

    fn find<T>(&self, labels: &str, answer: impl FnOnce(&Value, Subject<'_>) -> T) -> Option<T> {
        let labels = labels.strip_suffix('.').unwrap_or(labels);
        // The lowercased name, when the query has capitals; it outlives the match below
        // because the TXT subject may borrow it.
        let lower: String;
        let (index, subject) = match &self.data {
            Data::V4(table) => {
                let ip = match reverse_ip4(labels) {
                    Some(ip) => ip,
                    // rbldnsd also answers an IPv4 list for the IPv6 forms of an IPv4
                    // address: v4-mapped (::ffff:a.b.c.d) and 6to4 (2002:aabb:ccdd::/48).
                    None => {
                        let ip6 = reverse_ip6(labels)?;
                        if ip6 >> 32 == 0xffff {
                            ip6 as u32
                        } else if ip6 >> 112 == 0x2002 {
                            (ip6 >> 80) as u32
                        } else {
                            return None;
                        }
                    }
                };
                let index = match ip {
                    IP4_NEVER => return None,
                    IP4_TEST => table.get(ip).unwrap_or(self.test_value),
                    _ => table.get(ip)?,
                };
                (index, Subject::V4(ip))
            }
            Data::V6(table) => {
                let ip = reverse_ip6(labels)?;
                let index = match ip {
                    _ if ip == V4_MAPPED | u128::from(IP4_NEVER) => return None,
                    _ if ip == V4_MAPPED | u128::from(IP4_TEST) => {
                        table.get(ip).unwrap_or(self.test_value)
                    }
                    _ => table.get(ip)?,
                };
                (index, Subject::V6(ip))
            }
            Data::Names { exact, wild } => {
                let name = if labels.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = labels.to_ascii_lowercase();
                    lower.as_str()
                } else {
                    labels
                };
                if name.is_empty() || name.split('.').any(str::is_empty) || name == "invalid" {
                    return None;
                }
                match find_name(exact, wild, name) {
                    Some((index, matched)) => (index, Subject::Name(matched)),
                    None if name == "test" => (self.test_value, Subject::Name("test")),
                    None => return None,
                }
            }
        };
        let value = self.values.get(index as usize)?;
        Some(answer(value, subject))
    }

    /// rbldnsd's `txtsubst`: `$` is the subject, `$$` a dollar, `$0`..`$9` the variables,
    /// and with a `$=` base template the entry's text goes where the template says `$=`
    /// (an entry text starting with `=` opts out). Empty text means no TXT record.
    fn render(&self, txt: &str, subject: Subject<'_>) -> Option<String> {
        let mut subj = String::new();
        match subject {
            Subject::V4(ip) => {
                let _ = write!(subj, "{}", Ipv4Addr::from(ip));
            }
            Subject::V6(ip) => write_ip6(&mut subj, ip),
            Subject::Name(n) => subj.push_str(n),
        }
        let (mut t, sx): (&str, &str) = if let Some(own) = txt.strip_prefix('=') {
            (own, own)
        } else if let Some(base) = self.base_template.as_deref().filter(|b| !b.is_empty()) {
            (base, if txt.is_empty() { &subj } else { txt })
        } else {
            (txt, txt)
        };
        let mut out = String::new();
        while out.len() < MAX_TXT {
            let Some(p) = t.find('$') else {
                out.push_str(t);
                break;
            };
            out.push_str(&t[..p]);
            let rest = &t[p + 1..];
            match rest.as_bytes().first() {
                Some(b'$') => {
                    out.push('$');
                    t = &rest[1..];
                }
                Some(d @ b'0'..=b'9') => {
                    match &self.subst[usize::from(d - b'0')] {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&t[p..p + 2]),
                    }
                    t = &rest[1..];
                }
                Some(b'=') => {
                    out.push_str(sx);
                    t = &rest[1..];
                }
                _ => {
                    out.push_str(&subj);
                    t = rest;
                }
            }
        }
        let len = parse::truncate(&out, MAX_TXT).len();
        out.truncate(len);
        (!out.is_empty()).then_some(out)
    }
}

/// rbldnsd's dnset lookup: an exact entry decides first; otherwise the nearest proper
/// parent with a wildcard entry. Returns the value and the listed name that matched.
fn find_name<'n>(exact: &NameSet, wild: &NameSet, name: &'n str) -> Option<(u32, &'n str)> {
    if let Some(v) = exact.get(name) {
        return (v != ranges::EXCLUDED).then_some((v, name));
    }
    let mut rest = name;
    while let Some(dot) = rest.find('.') {
        rest = &rest[dot + 1..];
        if let Some(v) = wild.get(rest) {
            return (v != ranges::EXCLUDED).then_some((v, rest));
        }
    }
    None
}

/// `d.c.b.a` to the address a.b.c.d. Each label is a decimal octet written canonically:
/// no sign, no leading zero, at most 255.
fn reverse_ip4(labels: &str) -> Option<u32> {
    let mut ip = 0u32;
    let mut n = 0;
    for (i, label) in labels.split('.').enumerate() {
        if i >= 4 {
            return None;
        }
        let b = label.as_bytes();
        let canonical = matches!(b.len(), 1..=3)
            && b.iter().all(u8::is_ascii_digit)
            && (b.len() == 1 || b[0] != b'0');
        if !canonical {
            return None;
        }
        let octet: u32 = label.parse().ok()?;
        if octet > 255 {
            return None;
        }
        ip |= octet << (8 * i);
        n += 1;
    }
    (n == 4).then_some(ip)
}

/// 32 reversed nibble labels to an IPv6 address (RFC 5782 §2.4).
fn reverse_ip6(labels: &str) -> Option<u128> {
    if labels.len() != 63 {
        return None;
    }
    let mut ip = 0u128;
    for (i, label) in labels.split('.').enumerate() {
        let &[c] = label.as_bytes() else { return None };
        let nibble = (c as char).to_digit(16)?;
        if i >= 32 {
            return None;
        }
        ip |= u128::from(nibble) << (4 * i);
    }
    Some(ip)
}

/// An IPv6 address as rbldnsd's `ip6atos` writes it for `$`: lowercase hex groups, the
/// first longest run of two or more zero groups as `::`, and no dotted IPv4 tail (which
/// is where it differs from `Ipv6Addr`'s `Display`).
fn write_ip6(out: &mut String, ip: u128) {
    let words: [u16; 8] = std::array::from_fn(|i| (ip >> (112 - 16 * i)) as u16);
    let (mut zstart, mut zlen) = (0, 0);
    let mut i = 0;
    while i < 8 {
        let run = words[i..].iter().take_while(|&&w| w == 0).count();
        if run > 1 && run > zlen {
            (zstart, zlen) = (i, run);
        }
        i += run.max(1);
    }
    let group = |out: &mut String, range: std::ops::Range<usize>| {
        for (k, w) in words[range].iter().enumerate() {
            if k > 0 {
                out.push(':');
            }
            let _ = write!(out, "{w:x}");
        }
    };
    if zlen == 0 {
        group(out, 0..8);
    } else {
        group(out, 0..zstart);
        out.push_str("::");
        group(out, zstart + zlen..8);
    }
}
