//! rbldnsd's dataset syntax, line by line.
//!
//! Follows rbldnsd 1.0 (`rbldnsd_util.c`, `ip4parse.c`, `ip6addr.c` and the per-type
//! `*_line` functions) so that a file means the same here as there; where a rule looks odd
//! (a bare `127` is not an address, `:5` means 127.0.0.5) that is why.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{
    names::NameSet,
    ranges::{Interval, RangeTable, EXCLUDED},
    Data, Dataset, DatasetKind, DnsblError, NsRecords, Soa, Value, DEFAULT_TTL,
};

/// The value rbldnsd uses when a file gives none: A 127.0.0.2 and no TXT.
fn builtin_default() -> RawValue {
    RawValue {
        a: Ipv4Addr::new(127, 0, 0, 2),
        txt: Box::from(""),
    }
}

/// rbldnsd truncates TXT templates to this many bytes when loading.
const MAX_TEMPLATE: usize = 255;

/// How many warnings a lenient load keeps; a broken million-line file should not turn
/// into a million error values.
pub(crate) const MAX_WARNINGS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RawValue {
    a: Ipv4Addr,
    txt: Box<str>,
}

/// Collects the lines of one or more files into a [`Dataset`].
pub(crate) struct Builder {
    kind: DatasetKind,
    strict: bool,
    pub(crate) warnings: Vec<DnsblError>,
    pub(crate) skipped: usize,
    interned: HashMap<RawValue, u32>,
    values: Vec<Value>,
    v4: Vec<Interval<u32>>,
    v6: Vec<Interval<u128>>,
    exact: Vec<(Box<str>, u64, u32)>,
    wild: Vec<(Box<str>, u64, u32)>,
    order: u32,
    entries: usize,
    ttl: Option<u32>,
    soa: Option<Soa>,
    ns: Option<NsRecords>,
    subst: [Option<Box<str>>; 10],
    base_template: Option<Box<str>>,
    max_range4: Option<u64>,
    /// The `:A:TXT` default in effect; rbldnsd resets it at the start of every file.
    default: RawValue,
}

impl Builder {
    pub(crate) fn new(kind: DatasetKind, strict: bool) -> Builder {
        Builder {
            kind,
            strict,
            warnings: Vec::new(),
            skipped: 0,
            interned: HashMap::new(),
            values: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
            exact: Vec::new(),
            wild: Vec::new(),
            order: 0,
            entries: 0,
            ttl: None,
            soa: None,
            ns: None,
            subst: Default::default(),
            base_template: None,
            max_range4: None,
            default: builtin_default(),
        }
    }

    /// Reads one file's text. In strict mode the first bad line is the error; otherwise
    /// bad lines are skipped, as rbldnsd does, and kept as warnings.
    pub(crate) fn add_source(&mut self, file: &str, text: &str) -> Result<(), DnsblError> {
        self.default = builtin_default();
        for (n, raw) in text.lines().enumerate() {
            if let Err(message) = self.line(raw) {
                let err = DnsblError::Syntax {
                    file: file.to_string(),
                    line: n + 1,
                    message,
                };
                if self.strict {
                    return Err(err);
                }
                self.skipped += 1;
                if self.warnings.len() < MAX_WARNINGS {
                    self.warnings.push(err);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, raw: &str) -> Result<(), String> {
        let line = raw.trim_matches(is_space);
        let b = line.as_bytes();
        match b.first() {
            None => Ok(()),
            Some(b'$') => self.special(&line[1..]),
            Some(b'#' | b';' | b':') if b.get(1) == Some(&b'$') => self.special(&line[2..]),
            Some(b'#' | b';') => Ok(()),
            Some(_) => match self.kind {
                DatasetKind::Ip4Set | DatasetKind::Ip4Trie => self.ip4_line(line),
                DatasetKind::Ip6Trie => self.ip6_line(line),
                DatasetKind::Dnset => self.dnset_line(line),
            },
        }
    }

    /// `$SOA`, `$NS`, `$TTL`, `$MAXRANGE4`, `$n`, `$=` and the ones accepted and ignored.
    fn special(&mut self, s: &str) -> Result<(), String> {
        let (word, rest) = split_word(s);
        let rest_has_sep = s.len() > word.len();
        let lower = word.to_ascii_lowercase();
        // rbldnsd wants whitespace after the keyword; `$TTL` alone is not `$TTL` with no value.
        let unrecognized = || "invalid or unrecognized special entry".to_string();
        match lower.as_str() {
            "soa" if rest_has_sep => {
                if self.soa.is_some() {
                    return Ok(()); // only the first $SOA counts
                }
                let mut w = rest.split_ascii_whitespace();
                let mut next = || w.next().ok_or_else(|| "incomplete $SOA".to_string());
                let ttl = self.resolve_ttl(parse_time(next()?)?);
                let mname = parse_dn(next()?)?;
                let rname = parse_dn(next()?)?;
                let serial = next()?
                    .parse::<u32>()
                    .map_err(|_| "invalid $SOA serial".to_string())?;
                let refresh = parse_time(next()?)?;
                let retry = parse_time(next()?)?;
                let expire = parse_time(next()?)?;
                let minimum = parse_time(next()?)?;
                if next().is_ok() {
                    return Err("trailing data after $SOA".into());
                }
                self.soa = Some(Soa {
                    ttl,
                    mname,
                    rname,
                    serial,
                    refresh,
                    retry,
                    expire,
                    minimum,
                });
                Ok(())
            }
            "ns" | "nameserver" if rest_has_sep => {
                if self.ns.is_some() {
                    return Ok(()); // only the first $NS line counts (rbldnsd 1.0)
                }
                let mut w = rest.split_ascii_whitespace();
                let ttl = self.resolve_ttl(parse_time(w.next().ok_or("missing $NS ttl")?)?);
                let mut names = Vec::new();
                for name in w {
                    // A leading `-` comments one name out.
                    if !name.starts_with('-') {
                        names.push(parse_dn(name)?);
                    }
                }
                names.truncate(32);
                self.ns = Some(NsRecords { ttl, names });
                Ok(())
            }
            "ttl" if rest_has_sep => {
                let mut w = rest.split_ascii_whitespace();
                let ttl = parse_time(w.next().ok_or_else(unrecognized)?)?;
                if w.next().is_some() {
                    return Err(unrecognized());
                }
                self.ttl = Some(if ttl == 0 { DEFAULT_TTL } else { ttl });
                Ok(())
            }
            "maxrange4" if rest_has_sep => {
                let (cidr, num) = match rest.strip_prefix('/') {
                    Some(n) => (true, n),
                    None => (false, rest),
                };
                let r: u64 = num.parse().map_err(|_| unrecognized())?;
                let r = match (cidr, r) {
                    (_, 0) => return Err(unrecognized()),
                    (true, bits @ 1..=32) => 1u64 << (32 - bits),
                    (true, _) => return Err(unrecognized()),
                    (false, r) => r,
                };
                // The limit can be lowered, never raised.
                match self.max_range4 {
                    Some(cur) if cur < r => {}
                    _ => self.max_range4 = Some(r),
                }
                Ok(())
            }
            // `$TIMESTAMP` (data expiry) and `$ENT` are accepted and ignored: expiry
            // belongs to whoever fetches the mirror, and empty non-terminals are the
            // server's business.
            "timestamp" | "ent" => Ok(()),
            _ => {
                let b = s.as_bytes();
                match b.first() {
                    Some(d @ b'0'..=b'9') if b.get(1).is_some_and(|c| is_space(*c as char)) => {
                        let text = s[2..].trim_start_matches(is_space);
                        if text.is_empty() {
                            return Err(unrecognized());
                        }
                        let slot = &mut self.subst[(d - b'0') as usize];
                        if slot.is_none() {
                            *slot = Some(Box::from(text));
                        }
                        Ok(())
                    }
                    Some(b'=') => {
                        let text = s[1..].trim_start_matches(is_space);
                        if text.is_empty() {
                            return Err(unrecognized());
                        }
                        if self.base_template.is_none() {
                            self.base_template = Some(Box::from(text));
                        }
                        Ok(())
                    }
                    _ => Err(unrecognized()),
                }
            }
        }
    }

    fn resolve_ttl(&self, ttl: u32) -> u32 {
        if ttl == 0 {
            self.ttl.unwrap_or(DEFAULT_TTL)
        } else {
            ttl
        }
    }

    fn intern(&mut self, v: RawValue) -> u32 {
        if let Some(&i) = self.interned.get(&v) {
            return i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(EXCLUDED - 1);
        self.values.push(Value {
            a: v.a,
            txt: v.txt.clone(),
        });
        self.interned.insert(v, i);
        i
    }

    fn next_order(&mut self) -> u64 {
        self.order = self.order.saturating_add(1);
        self.entries += 1;
        u64::from(u32::MAX - self.order)
    }

    /// A default line (`:A:TXT`): parsed against the built-in default, not the previous one.
    fn default_line(&mut self, s: &str) -> Result<(), String> {
        self.default = parse_a_txt(s, &builtin_default())?;
        Ok(())
    }

    /// What follows an entry's key: nothing or a comment (the default), or a value.
    fn entry_value(&mut self, excluded: bool, rest: &str) -> Result<u32, String> {
        if excluded {
            return Ok(EXCLUDED);
        }
        let rest = rest.trim_start_matches(is_space);
        let raw = if rest.is_empty() || rest.starts_with(['#', ';']) {
            self.default.clone()
        } else {
            parse_a_txt(rest, &self.default)?
        };
        Ok(self.intern(raw))
    }

    fn ip4_line(&mut self, line: &str) -> Result<(), String> {
        if line.starts_with(':') {
            return self.default_line(line);
        }
        let (excluded, s) = strip_bang(line);
        let trie = self.kind == DatasetKind::Ip4Trie;
        let (first, last, bits, rest) = if trie {
            let (addr, bits, rest) = parse_ip4_cidr(s).ok_or("invalid address")?;
            (addr, addr | !mask4(bits), bits, rest)
        } else {
            let (a, b, rest) = parse_ip4_range(s).ok_or("invalid address")?;
            (a, b, 0, rest)
        };
        if !ends_key(rest) {
            return Err("invalid address".into());
        }
        if let Some(max) = self.max_range4 {
            let size = u64::from(last - first) + 1;
            if size > max {
                return Err(format!(
                    "too large range ({size} addresses, $MAXRANGE4 is {max})"
                ));
            }
        }
        let value = self.entry_value(excluded, rest)?;
        let order = self.next_order();
        if trie {
            // ip4trie: the longest prefix wins; the first of two equal prefixes wins.
            self.v4.push(Interval {
                start: first,
                end: last,
                rank: (u64::from(bits) << 32) | order,
                value,
            });
        } else {
            // ip4set stores a range as /32, /24, /16 and /8 pieces and answers from the
            // finest level that has one; at one level an exclusion beats a listing.
            let excl = u64::from(excluded);
            ip4set_pieces(first, last, |start, end, level| {
                self.v4.push(Interval {
                    start,
                    end,
                    rank: (u64::from(level) << 34) | (excl << 33) | order,
                    value,
                })
            });
        }
        Ok(())
    }

    fn ip6_line(&mut self, line: &str) -> Result<(), String> {
        // `::1` is an address, not a default line.
        if line.starts_with(':') && !line.starts_with("::") {
            return self.default_line(line);
        }
        let (excluded, s) = strip_bang(line);
        let (addr, bits, rest) = parse_ip6_cidr(s).ok_or("invalid address")?;
        if !ends_key(rest) {
            return Err("invalid address".into());
        }
        let mask = mask6(bits);
        if addr & !mask != 0 {
            return Err("invalid range (non-zero host part)".into());
        }
        let value = self.entry_value(excluded, rest)?;
        let order = self.next_order();
        self.v6.push(Interval {
            start: addr,
            end: addr | !mask,
            rank: (u64::from(bits) << 32) | order,
            value,
        });
        Ok(())
    }

    fn dnset_line(&mut self, line: &str) -> Result<(), String> {
        if line.starts_with(':') {
            return self.default_line(line);
        }
        let (excluded, s) = strip_bang(line);
        let (plain, wild, s) = if let Some(rest) = s.strip_prefix("*.") {
            (false, true, rest)
        } else if let Some(rest) = s.strip_prefix('.') {
            (true, true, rest)
        } else {
            (true, false, s)
        };
        let (name, rest) = split_word(s);
        let name = parse_dn(name).map_err(|_| "invalid domain name".to_string())?;
        let value = self.entry_value(excluded, rest)?;
        // An exclusion beats a listing of the same name; then the first line wins.
        let rank = (u64::from(excluded) << 33) | self.next_order();
        let name = name.to_ascii_lowercase().into_boxed_str();
        if plain && wild {
            self.exact.push((name.clone(), rank, value));
            self.wild.push((name, rank, value));
        } else if plain {
            self.exact.push((name, rank, value));
        } else {
            self.wild.push((name, rank, value));
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Dataset {
        let test_value = self.intern(self.default.clone());
        let data = match self.kind {
            DatasetKind::Ip4Set | DatasetKind::Ip4Trie => {
                Data::V4(RangeTable::build(std::mem::take(&mut self.v4)))
            }
            DatasetKind::Ip6Trie => Data::V6(RangeTable::build(std::mem::take(&mut self.v6))),
            DatasetKind::Dnset => Data::Names {
                exact: NameSet::build(std::mem::take(&mut self.exact)),
                wild: NameSet::build(std::mem::take(&mut self.wild)),
            },
        };
        self.values.shrink_to_fit();
        Dataset {
            kind: self.kind,
            ttl: self.ttl,
            soa: self.soa,
            ns: self.ns,
            subst: self.subst,
            base_template: self.base_template,
            values: self.values,
            test_value,
            entries: self.entries,
            data,
        }
    }
}

fn is_space(c: char) -> bool {
    // rbldnsd's ISSPACE; `\r` is included so CRLF files read the same.
    matches!(c, ' ' | '\t' | '\r')
}

/// The first whitespace-delimited word, and what follows it (its leading blanks skipped).
fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(is_space).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches(is_space))
}

fn strip_bang(line: &str) -> (bool, &str) {
    match line.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start_matches(is_space)),
        None => (false, line),
    }
}

/// An entry's key must be followed by nothing, blanks, a comment or a `:` value.
fn ends_key(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with(|c: char| is_space(c) || matches!(c, '#' | ';' | ':'))
}

/// A time value with rbldnsd's optional unit suffix (s, m, h, d, w).
fn parse_time(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid time value {s:?}");
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u32 = s[..digits].parse().map_err(|_| bad())?;
    let mult = match &s[digits..] {
        "" | "s" | "S" => 1,
        "m" | "M" => 60,
        "h" | "H" => 3600,
        "d" | "D" => 86400,
        "w" | "W" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// A domain name in presentation form, without the trailing dot. Backslash escapes are
/// refused: the query side sees names as dotted text, where they could never match.
fn parse_dn(s: &str) -> Result<String, String> {
    let bad = || format!("invalid domain name {s:?}");
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 || s.contains('\\') {
        return Err(bad());
    }
    if s.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// rbldnsd's `parse_a_txt`: `:A:TXT`, `:A:` (no TXT), `:A` (the default TXT) or `TXT`
/// (the default A). A is an address or its last octets (`:2` is 127.0.0.2).
fn parse_a_txt(s: &str, default: &RawValue) -> Result<RawValue, String> {
    let (a, txt) = if let Some(rest) = s.strip_prefix(':') {
        let (bits, addr, rest) = parse_ip4_prefix(rest).ok_or("invalid A RR")?;
        // inet_aton's short forms, as rbldnsd's ip4addr() reads them.
        let addr = match bits {
            8 => (addr >> 24) | 0x7f00_0000,
            16 => (addr & 0xff00_0000) | ((addr >> 16) & 255),
            24 => (addr & 0xffff_0000) | ((addr >> 8) & 255),
            _ => addr,
        };
        if addr == 0 || (bits == 8 && addr == 0x7f00_0000) {
            return Err("invalid A RR".into());
        }
        let rest = rest.trim_start_matches(is_space);
        match rest.strip_prefix(':') {
            Some(txt) => (Ipv4Addr::from(addr), txt.trim_start_matches(is_space)),
            None if rest.is_empty() => (Ipv4Addr::from(addr), &*default.txt),
            None => return Err("unrecognized value for an entry".into()),
        }
    } else {
        (default.a, s)
    };
    Ok(RawValue {
        a,
        txt: Box::from(truncate(txt, MAX_TEMPLATE)),
    })
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn mask4(bits: u32) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    }
}

fn mask6(bits: u32) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    }
}

/// rbldnsd's `ip4prefix`: one to four decimal octets, left-aligned. Returns the number of
/// bits given (8, 16, 24 or 32), the address and the rest of the text.
fn parse_ip4_prefix(s: &str) -> Option<(u32, u32, &str)> {
    let mut addr = 0u32;
    let mut rest = s;
    for i in 0..4 {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut octet = 0u32;
        for d in rest[..digits].bytes() {
            octet = octet * 10 + u32::from(d - b'0');
            if octet > 255 {
                return None;
            }
        }
        addr |= octet << (24 - 8 * i);
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(r) if i < 3 => rest = r,
            _ => return Some((8 * (i + 1), addr, rest)),
        }
    }
    Some((32, addr, rest))
}

/// `/bits` after a prefix: 0 to 32.
fn parse_mask_bits(s: &str, max: u32) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let bits: u32 = s[..digits].parse().ok()?;
    (bits <= max).then_some((bits, &s[digits..]))
}

/// rbldnsd's `ip4range` plus its network check: `a.b.c.d`, a prefix (`127.0.0` is a /24),
/// CIDR (`127/8`), or a range (`a-b`, where a one-number end replaces the last octet given).
/// Returns the first and last address. A bare number, a non-network CIDR base
/// (`127.0.0.1/24`) and `/0` are refused, as rbldnsd refuses them without `-e`.
fn parse_ip4_range(s: &str) -> Option<(u32, u32, &str)> {
    let (bits, a, rest) = parse_ip4_prefix(s)?;
    if let Some(r) = rest.strip_prefix('-') {
        let (bbits, mut b, rest) = parse_ip4_prefix(r)?;
        if bbits == 8 {
            // `127.0.0.1-2`: the end's one number takes the place of the last octet given.
            b = (b >> (bits - 8)) | (a & mask4(bits - 8));
        } else if bbits != bits {
            return None;
        }
        b |= !mask4(bits);
        return (a <= b).then_some((a, b, rest));
    }
    let (bits, rest) = match rest.strip_prefix('/') {
        Some(r) => parse_mask_bits(r, 32)?,
        None if bits == 8 => return None,
        None => (bits, rest),
    };
    if bits == 0 || a & !mask4(bits) != 0 {
        return None;
    }
    Some((a, a | !mask4(bits), rest))
}

/// rbldnsd's `ip4cidr` for ip4trie: a prefix with an optional `/bits`, network-aligned.
fn parse_ip4_cidr(s: &str) -> Option<(u32, u32, &str)> {
    let (bits, a, rest) = parse_ip4_prefix(s)?;
    let (bits, rest) = match rest.strip_prefix('/') {
        Some(r) => parse_mask_bits(r, 32)?,
        None if bits == 8 => return None,
        None => (bits, rest),
    };
    if bits == 0 || a & !mask4(bits) != 0 {
        return None;
    }
    Some((a, bits, rest))
}

/// rbldnsd's `ip6cidr`: up to eight hex groups with an optional `::`, then `/bits`.
/// Without `::` or `/bits` the groups given are the prefix (`2001:db8` is a /32); with
/// `::` the address is complete (/128). One bare group is refused.
fn parse_ip6_cidr(s: &str) -> Option<(u128, u32, &str)> {
    let mut groups: Vec<u16> = Vec::with_capacity(8);
    let mut zstart: Option<usize> = None;
    let mut rest = s;
    if let Some(r) = rest.strip_prefix("::") {
        zstart = Some(0);
        rest = r;
    }
    // Whether the address ended right after a group, not after a dangling `:`.
    let mut clean = false;
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if digits == 0 {
            break;
        }
        if digits > 4 {
            return None;
        }
        groups.push(u16::from_str_radix(&rest[..digits], 16).ok()?);
        rest = &rest[digits..];
        if !rest.starts_with(':') || groups.len() == 8 {
            clean = true;
            break;
        }
        rest = &rest[1..];
        if zstart.is_none() && rest.starts_with(':') {
            zstart = Some(groups.len());
            rest = &rest[1..];
        }
    }
    let mut bits = match zstart {
        Some(_) if groups.len() == 8 => return None,
        Some(_) => 128,
        None if groups.is_empty() || !clean => return None,
        None => 16 * groups.len() as u32,
    };
    let mut words = [0u16; 8];
    match zstart {
        Some(z) => {
            let tail = groups.len() - z;
            words[..z].copy_from_slice(&groups[..z]);
            words[8 - tail..].copy_from_slice(&groups[z..]);
        }
        None => words[..groups.len()].copy_from_slice(&groups),
    }
    if let Some(r) = rest.strip_prefix('/') {
        let (b, r) = parse_mask_bits(r, 128)?;
        bits = b;
        rest = r;
    } else if bits == 16 {
        return None;
    }
    let addr = words
        .iter()
        .fold(0u128, |acc, &w| (acc << 16) | u128::from(w));
    Some((addr, bits, rest))
}

/// rbldnsd's `ip4range_expand`: splits `[a, b]` into runs of /32s, /24s, /16s and /8s,
/// and reports each run with its level (4 for /32 down to 1 for /8), the specificity
/// rbldnsd's ip4set answers by.
fn ip4set_pieces(a: u32, b: u32, mut emit: impl FnMut(u32, u32, u8)) {
    // `a` and `b` count units of 2^bits addresses.
    let (mut a, mut b) = (u64::from(a), u64::from(b));
    let mut run = |level: u8, bits: u32, first: u64, last: u64| {
        if first <= last {
            let start = (first << bits) as u32;
            let end = (((last + 1) << bits) - 1) as u32;
            emit(start, end, level);
        }
    };
    for (bits, level) in [(0u32, 4u8), (8, 3), (16, 2)] {
        if a > b {
            return;
        }
        if (a | 255) >= b {
            if b - a == 255 {
                run(level - 1, bits, a, b);
            } else {
                run(level, bits, a, b);
            }
            return;
        }
        if a & 255 != 0 {
            run(level, bits, a, a | 255);
            a = (a >> 8) + 1;
        } else {
            a >>= 8;
        }
        if b & 255 != 255 {
            run(level, bits, b & !255, b);
            b = (b >> 8) - 1;
        } else {
            b >>= 8;
        }
    }
    run(1, 24, a, b);
}
