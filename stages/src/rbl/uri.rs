//! Finding the link hosts in a message body, reduced to what URI blocklists list:
//! registrable domains (`www.sub.example.co.uk` → `example.co.uk`) and IP literals.
//!
//! The body is decoded with mail-parser (quoted-printable, base64, charsets, nested
//! messages). Links are then found by hand rather than with an HTML parser or a URL
//! crate: we only need the host of each link, must accept the sloppy markup spam is
//! written in, and must stay linear in the size of hostile input.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use hickory_resolver::proto::rr::Name;
use mail_parser::{Message, MessageParser, PartType};

use super::names::Target;

/// A host longer than this is no DNS name (253 bytes), even with a port and userinfo;
/// scanning stops there so one endless "link" costs nothing.
const MAX_AUTHORITY: usize = 512;

/// The distinct link targets of a raw RFC 5322 message, in order of first appearance,
/// at most `max` of them.
pub(crate) fn body_targets(raw: &[u8], max: usize) -> Vec<Target> {
    let mut found = Collector::new(max);
    if max == 0 {
        return found.into_targets();
    }
    let parser = MessageParser::new().with_mime_headers();
    match crate::mime::parse(&parser, raw) {
        Some(message) => scan_message(&message, &mut found),
        // Nothing MIME-like at all: still look at the bytes as text.
        None => scan_text(&String::from_utf8_lossy(raw), &mut found),
    }
    found.into_targets()
}

fn scan_message(message: &Message<'_>, found: &mut Collector) {
    for part in &message.parts {
        if found.full() {
            return;
        }
        match &part.body {
            PartType::Text(text) => scan_text(text, found),
            PartType::Html(html) => scan_html(html, found),
            // mail-parser bounds the nesting depth itself.
            PartType::Message(inner) => scan_message(inner, found),
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Multipart(_) => {}
        }
    }
}

/// The targets found so far: deduplicated and bounded.
pub(crate) struct Collector {
    seen: HashSet<Target>,
    out: Vec<Target>,
    max: usize,
}

impl Collector {
    pub(crate) fn new(max: usize) -> Self {
        Collector {
            seen: HashSet::new(),
            out: Vec::new(),
            max,
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max
    }

    fn add_authority(&mut self, authority: &str) {
        if self.full() {
            return;
        }
        if let Some(target) = authority_target(authority) {
            if self.seen.insert(target.clone()) {
                self.out.push(target);
            }
        }
    }

    /// What was collected.
    pub(crate) fn into_targets(self) -> Vec<Target> {
        self.out
    }
}

/// Finds `http://`, `https://` and bare `www.` links in text, as a reader's mail
/// client would make them clickable.
pub(crate) fn scan_text(text: &str, found: &mut Collector) {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() && !found.full() {
        let rest = &bytes[i..];
        let start = if rest.starts_with(b"http://") {
            Some(i + 7)
        } else if rest.starts_with(b"https://") {
            Some(i + 8)
        } else if rest.starts_with(b"www.") && (i == 0 || !is_host_byte(bytes[i - 1])) {
            Some(i)
        } else {
            None
        };
        match start {
            Some(start) => {
                let end = authority_end(bytes, start);
                // `start` follows ASCII and `end` sits on an ASCII byte or the end, so
                // both are char boundaries.
                if let Some(authority) = lower.get(start..end) {
                    found.add_authority(authority);
                }
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
}

/// Finds the `href` values of HTML (entity-decoded, so `&#46;` tricks do not hide a
/// host) and any link in the HTML's text.
pub(crate) fn scan_html(html: &str, found: &mut Collector) {
    let decoded = decode_entities(html);
    let lower = decoded.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while !found.full() {
        let Some(pos) = lower.get(i..).and_then(|rest| rest.find("href")) else {
            break;
        };
        let at = i + pos;
        i = at + 4;
        // Only an attribute name: `href` after a separator (browsers also accept a
        // quote or a slash there), and followed by `=`.
        if at > 0
            && !(bytes[at - 1].is_ascii_whitespace()
                || matches!(bytes[at - 1], b'"' | b'\'' | b'/'))
        {
            continue;
        }
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if bytes.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let (value_start, value_end) = match bytes.get(j) {
            Some(&quote @ (b'"' | b'\'')) => {
                let start = j + 1;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == quote)
                    .map_or(bytes.len(), |p| start + p);
                (start, end)
            }
            Some(_) => {
                let end = bytes[j..]
                    .iter()
                    .position(|&b| b.is_ascii_whitespace() || b == b'>')
                    .map_or(bytes.len(), |p| j + p);
                (j, end)
            }
            None => break,
        };
        if let Some(value) = lower.get(value_start..value_end) {
            href_target(value, found);
        }
        i = value_end.max(i);
    }
    if !found.full() {
        scan_text(&decoded, found);
    }
}

/// One `href` value: an absolute http(s) link or a protocol-relative one (`//host/`).
fn href_target(value: &str, found: &mut Collector) {
    // Browsers drop tabs and newlines anywhere in a URL and trim spaces and controls,
    // so `ht\ttp://` still leads somewhere.
    let url: String = value
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let url = url.trim_matches(|c: char| c <= ' ');
    // Browsers also read `\` as `/` in http(s) URLs.
    let url = url.replace('\\', "/");
    let rest = ["http://", "https://", "//"]
        .iter()
        .find_map(|prefix| url.strip_prefix(prefix));
    if let Some(rest) = rest {
        let end = authority_end(rest.as_bytes(), 0);
        if let Some(authority) = rest.get(..end) {
            found.add_authority(authority);
        }
    }
}

/// Where the authority (`user@host:port`) that starts at `start` ends.
fn authority_end(bytes: &[u8], start: usize) -> usize {
    let limit = bytes.len().min(start + MAX_AUTHORITY);
    let mut i = start;
    // An IPv6 literal holds colons: skip to its closing bracket.
    if bytes.get(i) == Some(&b'[') {
        match bytes[i..limit].iter().position(|&b| b == b']') {
            Some(p) => i += p + 1,
            None => return limit,
        }
    }
    while i < limit {
        let b = bytes[i];
        let ends = b.is_ascii_whitespace()
            || b.is_ascii_control()
            || matches!(
                b,
                b'/' | b'?'
                    | b'#'
                    | b'\\'
                    | b'<'
                    | b'>'
                    | b'"'
                    | b'\''
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'|'
                    | b'^'
                    | b'`'
                    | b','
                    | b';'
                    | b'*'
                    | b'!'
            );
        if ends {
            return i;
        }
        i += 1;
    }
    i
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'@')
}

/// The target an authority names: its registrable domain, or its IP literal.
fn authority_target(authority: &str) -> Option<Target> {
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let literal = v6.split(']').next().unwrap_or(v6);
            let ip = literal.parse::<Ipv6Addr>().ok()?;
            return Some(Target::Ip(IpAddr::V6(ip).to_canonical()));
        }
        None => host.split(':').next().unwrap_or(host),
    };
    host_target(host)
}

/// A bare host name or IPv4 literal, reduced to what a URI list lists.
pub(crate) fn host_target(host: &str) -> Option<Target> {
    let host = percent_decode(host)?;
    // Sentence punctuation after a link, and the root dot of an FQDN.
    let host = host.trim_end_matches(['.', ':', '-']);
    if host.is_empty() {
        return None;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Some(Target::Ip(IpAddr::V4(v4)));
    }
    // UTS #46 to punycode, as a browser resolves an IDN; the relaxed form keeps
    // underscores, which real hosts do carry.
    let ascii = Name::from_str_relaxed(host)
        .ok()?
        .to_ascii()
        .to_ascii_lowercase();
    let ascii = ascii.trim_end_matches('.');
    let valid = ascii.contains('.')
        && ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && ascii
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63);
    if !valid {
        return None;
    }
    let domain = psl::domain_str(ascii)?;
    Some(Target::Domain(domain.to_owned()))
}

/// `%65vil.example` is `evil.example` to a browser.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Decodes the character references a host or URL can be hidden behind: numeric ones
/// (`&#46;`, `&#x2e;`, with or without `;`) and the few named ones that spell URL
/// punctuation. Others are kept as written.
pub(crate) fn decode_entities(html: &str) -> String {
    const NAMED: [(&str, char); 9] = [
        ("amp;", '&'),
        ("lt;", '<'),
        ("gt;", '>'),
        ("quot;", '"'),
        ("apos;", '\''),
        ("period;", '.'),
        ("colon;", ':'),
        ("sol;", '/'),
        ("nbsp;", ' '),
    ];
    if !html.contains('&') {
        return html.to_owned();
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(numeric) = after.strip_prefix('#') {
            let (digits, radix, skip) = match numeric.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16, 2),
                None => (numeric, 10, 1),
            };
            let len = digits
                .bytes()
                .take(8)
                .take_while(|b| (*b as char).is_digit(radix))
                .count();
            let ch = u32::from_str_radix(&digits[..len], radix)
                .ok()
                .and_then(char::from_u32);
            if let (Some(ch), true) = (ch, len > 0) {
                out.push(ch);
                let mut consumed = 1 + skip + len;
                if digits[len..].starts_with(';') {
                    consumed += 1;
                }
                rest = &rest[at + consumed..];
                continue;
            }
        } else if let Some((name, ch)) = NAMED.iter().find(|(name, _)| {
            after
                .get(..name.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) {
            out.push(*ch);
            rest = &after[name.len()..];
            continue;
        }
        out.push('&');
        rest = after;
    }
    out.push_str(rest);
    out
}
