//! One message as the rule types see it: header values (decoded, raw, addresses,
//! names), the rendered body as SpamAssassin's paragraph lines, the decoded raw body
//! lines, the full text, and the URIs. Built once per message; every size is capped so
//! a huge message costs a bounded amount of memory and time.

use std::borrow::Cow;

use mail_parser::{decoders::html::html_to_text, HeaderValue, Message, MessageParser, PartType};

use super::HeaderTarget;

/// Only the first bytes of a message are parsed: headers come first, and SpamAssassin
/// itself is normally given at most 500 KB (spamc's default). This bounds the memory of
/// the parse (decoded parts) whatever the message's size.
pub(crate) const MAX_PARSE: usize = 2 << 20;
/// Rendered text of one part that `body` rules see: SpamAssassin's
/// `body_part_scan_size` default.
pub(crate) const BODY_PART_SCAN: usize = 50_000;
/// Decoded text of one part that `rawbody` rules see: SpamAssassin's
/// `rawbody_part_scan_size` default.
pub(crate) const RAWBODY_PART_SCAN: usize = 500_000;
/// Rendered body text over all parts.
pub(crate) const MAX_BODY_TOTAL: usize = 512 << 10;
/// A longer paragraph is cut into lines of about this size, as SpamAssassin does, so that
/// a backtracking pattern never faces one endless line.
pub(crate) const MAX_LINE: usize = 2048;
/// Distinct URIs kept per message, and the length kept of each.
pub(crate) const MAX_URIS: usize = 1000;
/// MIME parts whose headers `mimeheader` rules see: a message with more is hostile or
/// broken, and the first parts say enough.
pub(crate) const MAX_MIME_PARTS: usize = 100;
const MAX_URI_LEN: usize = 2048;

/// One header field.
pub(crate) struct Field {
    pub(crate) name: String,
    /// The value as written: folded, not decoded, without the final line end.
    pub(crate) raw: String,
    /// Unfolded and RFC 2047-decoded.
    pub(crate) decoded: String,
    /// The raw bytes of the value, for byte-level checks.
    pub(crate) raw_bytes: Vec<u8>,
}

/// The views of one message.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) headers: Vec<Field>,
    /// The rendered body: the subject, then each paragraph with its whitespace collapsed.
    pub(crate) body_lines: Vec<String>,
    /// Decoded text parts (HTML as written), line by line.
    pub(crate) raw_lines: Vec<String>,
    /// The whole message (up to [`MAX_PARSE`]), with LF line ends.
    pub(crate) full: String,
    pub(crate) uris: Vec<String>,
    /// The headers of each MIME part, the message itself first (as SpamAssassin's
    /// `find_parts` lists them), for `mimeheader` rules.
    pub(crate) mime_parts: Vec<Vec<Field>>,
    /// Facts for the native evals.
    pub(crate) facts: Facts,
}

/// What the native evals look at.
#[derive(Debug, Default, Clone)]
pub(crate) struct Facts {
    pub(crate) text_parts: usize,
    pub(crate) html_parts: usize,
    pub(crate) html_images: usize,
    /// Characters of rendered HTML text (whitespace excluded).
    pub(crate) html_text_chars: usize,
    /// Characters of rendered body text of all parts (whitespace excluded).
    pub(crate) body_text_chars: usize,
    pub(crate) binary_parts: usize,
    /// Whether a blank line separates the header from the body.
    pub(crate) has_separator: bool,
    /// Bytes after the header (SpamAssassin's `pristine_body_length`), of the whole
    /// message, not only the parsed prefix.
    pub(crate) body_len: usize,
    /// HTML tag names opened in the HTML parts (lower case, distinct), for
    /// `html_tag_exists`.
    pub(crate) html_tags: Vec<String>,
}

impl View {
    /// Builds the views of a raw RFC 5322 message.
    pub(crate) fn parse(raw: &[u8]) -> View {
        let full_len = raw.len();
        let raw = &raw[..raw.len().min(MAX_PARSE)];
        let mut view = View {
            // Lines end in LF, as rule writers (and Perl's `$` under /m) expect.
            full: String::from_utf8_lossy(raw).replace("\r\n", "\n"),
            ..View::default()
        };
        view.facts.has_separator = has_separator(raw);
        view.facts.body_len = full_len.saturating_sub(header_len(raw));
        let parser = MessageParser::new()
            .with_mime_headers()
            .default_header_text();
        let Some(message) = crate::mime::parse(&parser, raw) else {
            // Nothing MIME-like: the bytes are the body.
            let text = view.full.clone();
            view.body_lines = paragraphs(&text, BODY_PART_SCAN);
            view.raw_lines = lines(&text, RAWBODY_PART_SCAN);
            collect_uris(&text, false, &mut view.uris);
            return view;
        };
        if let Some(root) = message.parts.first() {
            view.headers = fields(&root.headers, raw);
        }
        view.mime_parts = message
            .parts
            .iter()
            .take(MAX_MIME_PARTS)
            .map(|part| fields(&part.headers, raw))
            .collect();
        if let Some(subject) = view.header_decoded("subject") {
            view.body_lines.push(collapse(&subject));
        }
        let mut budget = MAX_BODY_TOTAL;
        walk(&message, &mut view, &mut budget, 0);
        view
    }

    /// The decoded values of a header, joined by newlines; `None` when absent.
    pub(crate) fn header_decoded(&self, name: &str) -> Option<String> {
        self.values(name, |f| Cow::Borrowed(f.decoded.as_str()))
    }

    fn values<'a>(
        &'a self,
        name: &str,
        pick: impl Fn(&'a Field) -> Cow<'a, str>,
    ) -> Option<String> {
        let mut out: Option<String> = None;
        for f in self
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
        {
            let v = pick(f);
            match &mut out {
                Some(s) => {
                    s.push('\n');
                    s.push_str(&v);
                }
                None => out = Some(v.into_owned()),
            }
        }
        out
    }

    /// The text a header rule tests, or `None` when the header is absent.
    pub(crate) fn header_value(&self, target: &HeaderTarget) -> Option<String> {
        match target {
            HeaderTarget::All { raw } => {
                let mut out = String::new();
                for f in &self.headers {
                    out.push_str(&f.name);
                    out.push_str(": ");
                    out.push_str(if *raw { &f.raw } else { &f.decoded });
                    out.push('\n');
                }
                Some(out)
            }
            HeaderTarget::Named { name, modifier } => {
                // SpamAssassin's pseudo-headers that name several real ones.
                let names: &[&str] = match name.to_ascii_lowercase().as_str() {
                    "tocc" => &["To", "Cc"],
                    "messageid" => &["Message-Id", "Resent-Message-Id", "X-Message-Id"],
                    "envelopefrom" => &["X-Envelope-From", "Return-Path"],
                    _ => &[],
                };
                if names.is_empty() {
                    return self.modified(name, *modifier);
                }
                let parts: Vec<String> = names
                    .iter()
                    .filter_map(|n| self.modified(n, *modifier))
                    .collect();
                (!parts.is_empty()).then(|| parts.join("\n"))
            }
        }
    }

    fn modified(&self, name: &str, modifier: Modifier) -> Option<String> {
        match modifier {
            Modifier::Decoded => self.header_decoded(name),
            Modifier::Raw => self.values(name, |f| Cow::Borrowed(f.raw.as_str())),
            Modifier::Addr => self.values(name, |f| Cow::Owned(address(&f.decoded))),
            Modifier::Name => self.values(name, |f| Cow::Owned(display_name(&f.decoded))),
        }
    }

    /// Whether a header is present.
    pub(crate) fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// How a header's value is presented to a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Modifier {
    /// Unfolded and decoded (the default).
    Decoded,
    /// `:raw`: as written.
    Raw,
    /// `:addr`: the first address.
    Addr,
    /// `:name`: the display name of the first address.
    Name,
}

/// The header fields of one part, with their raw text taken from the message bytes.
fn fields(headers: &[mail_parser::Header<'_>], raw: &[u8]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            let raw_bytes = trim_line_end(&raw[start..end]).to_vec();
            // Line ends as SpamAssassin has them (LF), so `:raw` patterns with `\n`
            // for a folded line match.
            let raw_text = String::from_utf8_lossy(&raw_bytes).replace("\r\n", "\n");
            let decoded = match &h.value {
                HeaderValue::Text(t) => t.trim().to_owned(),
                HeaderValue::TextList(list) => list.join(", "),
                _ => unfold(&raw_text).trim().to_owned(),
            };
            Field {
                name: h.name().to_owned(),
                raw: raw_text,
                decoded,
                raw_bytes,
            }
        })
        .collect()
}

fn walk(message: &Message<'_>, view: &mut View, budget: &mut usize, depth: usize) {
    for part in &message.parts {
        match &part.body {
            PartType::Text(text) => {
                view.facts.text_parts += 1;
                add_text(text, false, view, budget);
            }
            PartType::Html(html) => {
                view.facts.html_parts += 1;
                add_text(html, true, view, budget);
            }
            // mail-parser bounds the nesting itself; the depth check is a second guard.
            PartType::Message(inner) if depth < 8 => walk(inner, view, budget, depth + 1),
            PartType::Binary(_) | PartType::InlineBinary(_) => view.facts.binary_parts += 1,
            PartType::Message(_) | PartType::Multipart(_) => {}
        }
    }
}

fn add_text(text: &str, html: bool, view: &mut View, budget: &mut usize) {
    let raw_part = cut(text, RAWBODY_PART_SCAN);
    view.raw_lines.extend(lines(raw_part, RAWBODY_PART_SCAN));
    collect_uris(raw_part, html, &mut view.uris);
    let rendered: Cow<'_, str> = if html {
        view.facts.html_images += count_ci(raw_part, "<img");
        tag_names(raw_part, &mut view.facts.html_tags);
        Cow::Owned(html_to_text(raw_part))
    } else {
        Cow::Borrowed(raw_part)
    };
    let chars = rendered.chars().filter(|c| !c.is_whitespace()).count();
    view.facts.body_text_chars += chars;
    if html {
        view.facts.html_text_chars += chars;
    }
    if *budget == 0 {
        return;
    }
    let limit = BODY_PART_SCAN.min(*budget);
    let shown = cut(&rendered, limit);
    *budget -= shown.len();
    view.body_lines.extend(paragraphs(shown, limit));
}

/// Distinct tag names opened in `html` (`<name` then a space, `/` or `>`), at most 64:
/// a page with more distinct tags is not one a rule about a tag's presence misses.
fn tag_names(html: &str, out: &mut Vec<String>) {
    let bytes = html.as_bytes();
    for (at, _) in html.match_indices('<') {
        if out.len() >= 64 {
            return;
        }
        let name_len = bytes[at + 1..]
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(bytes.len() - at - 1);
        let after = bytes.get(at + 1 + name_len).copied();
        if name_len == 0
            || !matches!(
                after,
                None | Some(b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')
            )
        {
            continue;
        }
        let name = html[at + 1..at + 1 + name_len].to_ascii_lowercase();
        if !out.contains(&name) {
            out.push(name);
        }
    }
}

/// Bytes up to and including the blank line that ends the header (all of them when
/// there is none).
fn header_len(raw: &[u8]) -> usize {
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => raw.len(),
    }
}

fn count_ci(text: &str, needle: &str) -> usize {
    let needle = needle.as_bytes();
    text.as_bytes()
        .windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// The longest prefix of at most `max` bytes that ends on a char boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn has_separator(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| w == b"\n\n") || raw.windows(3).any(|w| w == b"\n\r\n")
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &bytes[..end]
}

fn unfold(value: &str) -> String {
    value.replace("\r\n", "\n").replace('\n', "")
}

fn collapse(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '\u{a0}')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SpamAssassin's rendered body: paragraphs (split at blank lines) with all whitespace
/// collapsed to single spaces, long ones cut into lines of about [`MAX_LINE`].
fn paragraphs(text: &str, max: usize) -> Vec<String> {
    let text = cut(text, max);
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        let line = collapse(current);
        current.clear();
        split_long(&line, out);
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut current, &mut out);
        } else {
            current.push_str(line);
            current.push(' ');
        }
    }
    flush(&mut current, &mut out);
    out
}

fn split_long(line: &str, out: &mut Vec<String>) {
    let mut rest = line;
    while rest.len() > MAX_LINE {
        let head = cut(rest, MAX_LINE);
        // Prefer a cut at a space, so words stay whole.
        let at = head
            .rfind(' ')
            .filter(|&p| p > MAX_LINE / 2)
            .unwrap_or(head.len());
        out.push(rest[..at].to_owned());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
}

fn lines(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in cut(text, max).lines() {
        split_long(line, &mut out);
    }
    out
}

/// The first address in a header value: inside `<…>`, else the first word with an `@`.
fn address(value: &str) -> String {
    let value = value.lines().next().unwrap_or("");
    if let Some(open) = value.find('<') {
        let inner = &value[open + 1..];
        let end = inner.find('>').unwrap_or(inner.len());
        return inner[..end].trim().to_owned();
    }
    let without_comments = strip_comments(value);
    without_comments
        .split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.contains('@'))
        .or_else(|| without_comments.split_whitespace().next())
        .unwrap_or("")
        .trim_matches('"')
        .to_owned()
}

/// The display name in a header value: before `<…>`, else a `(comment)`.
fn display_name(value: &str) -> String {
    let value = value.lines().next().unwrap_or("");
    if let Some(open) = value.find('<') {
        return value[..open].trim().trim_matches('"').trim().to_owned();
    }
    match (value.find('('), value.rfind(')')) {
        (Some(open), Some(close)) if close > open => value[open + 1..close].trim().to_owned(),
        _ => String::new(),
    }
}

fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Finds the URIs a reader could follow: `http(s)://`, `ftp://`, `mailto:` and bare
/// `www.` links (made `http://`), in text and in (entity-decoded) HTML. By hand, like
/// `rbl::uri`, to accept sloppy markup in linear time; here the whole URI is kept, since
/// `uri` rules match paths and queries too.
fn collect_uris(text: &str, html: bool, out: &mut Vec<String>) {
    let decoded: Cow<'_, str> = if html && text.contains('&') {
        // The same entity decoding the rbl stage uses on links, so both see one URL.
        Cow::Owned(crate::rbl::uri::decode_entities(text))
    } else {
        Cow::Borrowed(text)
    };
    let text = decoded.as_ref();
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_URIS {
        let rest = &bytes[i..];
        let prefix = if rest.starts_with(b"http://")
            || rest.starts_with(b"https://")
            || rest.starts_with(b"ftp://")
            || rest.starts_with(b"mailto:")
        {
            Some("")
        } else if rest.starts_with(b"www.") && (i == 0 || !is_uri_byte(bytes[i - 1])) {
            Some("http://")
        } else {
            None
        };
        let Some(prefix) = prefix else {
            i += 1;
            continue;
        };
        let len = rest
            .iter()
            .take(MAX_URI_LEN)
            .position(|&b| {
                b.is_ascii_whitespace()
                    || b.is_ascii_control()
                    || matches!(
                        b,
                        b'<' | b'>' | b'"' | b'\'' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
                    )
            })
            .unwrap_or(rest.len().min(MAX_URI_LEN));
        // `lower` is `text` with ASCII letters lowered: the same byte offsets, and the
        // end sits on an ASCII byte (or the end), so on a char boundary.
        let mut end = i + len;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let uri = text[i..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
        if uri.len() > prefix.len() + 4 {
            let uri = format!("{prefix}{uri}");
            if !out.contains(&uri) {
                out.push(uri);
            }
        }
        i = end.max(i + 1);
    }
}

fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'@' | b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        assert_eq!(address("\"Bob B\" <bob@example.org>"), "bob@example.org");
        assert_eq!(address("bob@example.org (Bob)"), "bob@example.org");
        assert_eq!(display_name("\"Bob B\" <bob@example.org>"), "Bob B");
        assert_eq!(display_name("bob@example.org (Bob)"), "Bob");
    }

    #[test]
    fn uris_are_found_in_text_and_html() {
        let mut out = Vec::new();
        collect_uris(
            "see www.example.com/a, and http://x.example/p?q=1.",
            false,
            &mut out,
        );
        assert_eq!(out, ["http://www.example.com/a", "http://x.example/p?q=1"]);
        let mut out = Vec::new();
        collect_uris("<a href=\"http&#58;//evil.example/\">x</a>", true, &mut out);
        assert_eq!(out, ["http://evil.example/"]);
    }

    #[test]
    fn paragraphs_collapse_whitespace() {
        assert_eq!(paragraphs("a  b\nc\n\n d ", 100), ["a b c", "d"]);
    }
}
