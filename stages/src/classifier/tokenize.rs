//! Turning a raw message into the set of tokens the classifier counts.
//!
//! What becomes a token, and why:
//! - words of the decoded text parts (HTML rendered to text by mail-parser), lower-cased:
//!   the bulk of the evidence, as in every Graham/Robinson filter;
//! - words of the `Subject`, the `From` display name, and the `From`/`Reply-To` domains,
//!   each prefixed by its header, because a word means more in a subject than in a body;
//! - the MIME structure (content types, charsets, transfer encodings, attachment file
//!   extensions) and the mailer name, which spam tools and people's clients fill in
//!   differently;
//! - the hosts and registrable domains of links, which is where spam wants the reader
//!   to go.
//!
//! Left out on purpose: `Received`, dates, message ids and every header a relay or a
//! mailbox adds. They tell where and when a message was collected, not what it is, so a
//! model that learnt them would learn the training site rather than spam.
//!
//! Each token counts once per message, as in SpamAssassin and SpamBayes: a word repeated
//! a hundred times is one piece of evidence, not a hundred.

use std::collections::HashSet;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// The set of distinct tokens of one message.
pub type Tokens = HashSet<String>;

/// At most this much decoded text is tokenized per message, so the work per message is
/// bounded whatever its size: the first 200 KB of text carry all the evidence there is.
pub const MAX_TEXT_BYTES: usize = 200 * 1024;

/// At most this much of the raw message is parsed. Attachments past it are not looked
/// at: their bytes are no text, and parsing them would make the cost follow the size.
pub const MAX_RAW_BYTES: usize = 4 * 1024 * 1024;

/// Shorter words (`a`, `of`) are too common to tell anything.
const MIN_WORD_CHARS: usize = 3;
/// Longer words are kept as a `sk:` prefix of this many chars, as SpamAssassin does: an
/// encoded blob or a glued-together word is a signal, its exact spelling rarely repeats.
const MAX_WORD_CHARS: usize = 20;
/// Longer runs are no words at all (base64, hashes): they are skipped.
const SKIP_WORD_CHARS: usize = 40;
/// At most this many words of the mailer header, so one bloated header costs nothing.
const MAX_MAILER_WORDS: usize = 4;
/// A host name is at most 253 bytes; scanning for one stops past this.
const MAX_HOST_BYTES: usize = 255;

/// Removes a leading mbox `From ` separator line, which is no header and would make the
/// parser miss the real headers that follow it.
pub fn strip_mbox_from(raw: &[u8]) -> &[u8] {
    if !raw.starts_with(b"From ") {
        return raw;
    }
    match raw.iter().position(|&b| b == b'\n') {
        Some(end) => &raw[end + 1..],
        None => &[],
    }
}

/// The tokens of a raw RFC 5322 message. Never fails: what does not parse is read as
/// plain text.
pub fn tokenize(raw: &[u8]) -> Tokens {
    let raw = strip_mbox_from(raw);
    let raw = &raw[..raw.len().min(MAX_RAW_BYTES)];
    let mut out = Collector::default();
    match crate::mime::parse(&MessageParser::new(), raw) {
        Some(message) => {
            header_tokens(&message, &mut out);
            body_tokens(&message, &mut out);
        }
        None => out.text(&String::from_utf8_lossy(raw), ""),
    }
    out.tokens
}

/// Gathers tokens and keeps count of the text budget.
#[derive(Default)]
struct Collector {
    tokens: Tokens,
    text_left: Option<usize>,
}

impl Collector {
    fn add(&mut self, token: String) {
        self.tokens.insert(token);
    }

    /// Tokenizes body text until the budget is spent.
    fn body_text(&mut self, text: &str) {
        let left = *self.text_left.get_or_insert(MAX_TEXT_BYTES);
        if left == 0 {
            return;
        }
        let text = prefix_of(text, left);
        self.text_left = Some(left - text.len());
        self.text(text, "");
        self.links(text);
    }

    /// The words of `text`, each prefixed by `prefix`.
    fn text(&mut self, text: &str, prefix: &str) {
        for word in text.split(|c: char| !is_word_char(c)) {
            self.word(word, prefix);
        }
    }

    fn word(&mut self, word: &str, prefix: &str) {
        // Sentence punctuation sticks to words ("offer." "'free'"); `!` and `$` stay
        // because "free!!!" and "$$$" are spam's own spelling.
        let word = word.trim_matches(|c: char| matches!(c, '.' | '-' | '\'' | '_' | '@'));
        if let Some((_, domain)) = word.rsplit_once('@') {
            // An address: the local part is noise (often rewritten), the domain is not.
            if domain.contains('.') {
                self.add(format!("{prefix}email:{}", domain.to_lowercase()));
            }
            return;
        }
        let chars = word.chars().count();
        if !(MIN_WORD_CHARS..=SKIP_WORD_CHARS).contains(&chars) {
            return;
        }
        // Numbers (dates, prices, phone numbers) vary from one message to the next; a
        // token needs a letter, or the `$` of money.
        if !word.chars().any(|c| c.is_alphabetic() || c == '$') {
            return;
        }
        let lower = word.to_lowercase();
        if chars > MAX_WORD_CHARS {
            let short: String = lower.chars().take(8).collect();
            self.add(format!("{prefix}sk:{short}"));
        } else {
            self.add(format!("{prefix}{lower}"));
        }
    }

    /// The hosts of `http://`, `https://` and bare `www.` links in `text`.
    fn links(&mut self, text: &str) {
        let lower = text.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while let Some(pos) = [rest.find("http"), rest.find("www.")]
            .into_iter()
            .flatten()
            .min()
        {
            let found = &rest[pos..];
            let after = ["http://", "https://", "www."]
                .iter()
                .find_map(|p| found.strip_prefix(p).map(|r| (p, r)));
            match after {
                Some((prefix, after)) => {
                    let host = if *prefix == "www." {
                        host_of(found)
                    } else {
                        host_of(after)
                    };
                    if let Some(host) = host {
                        self.host(host);
                    }
                    rest = &found[prefix.len()..];
                }
                None => rest = &found[1..],
            }
        }
    }

    fn host(&mut self, host: &str) {
        let host = host.trim_end_matches('.');
        if host.parse::<std::net::IpAddr>().is_ok() {
            // The address itself rarely repeats; that a link avoids DNS does.
            self.add("url:ip".to_owned());
            return;
        }
        if !host.contains('.') {
            return;
        }
        self.add(format!("url:{host}"));
        if let Some(domain) = psl::domain_str(host) {
            if domain != host {
                self.add(format!("url:dom:{domain}"));
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn prefix_of(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Chars that make up words: letters, digits, and the few marks spam spells with.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '$' | '!' | '\'' | '-' | '_' | '.' | '@')
}

/// The host at the start of what follows `scheme://`, without userinfo or port.
fn host_of(after_scheme: &str) -> Option<&str> {
    let end = after_scheme
        .bytes()
        .take(MAX_HOST_BYTES + 1)
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'@' | b':')))
        .unwrap_or(after_scheme.len().min(MAX_HOST_BYTES + 1));
    let authority = &after_scheme[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = authority.split_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty() && host.len() <= MAX_HOST_BYTES).then_some(host)
}

fn header_tokens(message: &Message<'_>, out: &mut Collector) {
    if let Some(subject) = message.subject() {
        out.text(subject, "subject:");
        // All-capital subjects are a classic, and the lower-casing above hides them.
        let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
        if letters.len() >= 8 && letters.iter().all(|c| c.is_uppercase()) {
            out.add("subject:*allcaps*".to_owned());
        }
    } else {
        out.add("subject:*none*".to_owned());
    }
    if let Some(from) = message.from().and_then(|a| a.first()) {
        if let Some(name) = from.name() {
            out.text(name, "from:name:");
        }
        if let Some(domain) = from.address().and_then(|a| a.rsplit_once('@')) {
            out.add(format!("from:dom:{}", domain.1.to_lowercase()));
        }
    }
    if let Some(domain) = message
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
    {
        out.add(format!("replyto:dom:{}", domain.1.to_lowercase()));
    }
    for name in ["X-Mailer", "User-Agent"] {
        if let Some(mailer) = message.header_raw(name) {
            let words = mailer
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() >= 2 && w.chars().any(char::is_alphabetic))
                .take(MAX_MAILER_WORDS);
            for word in words {
                out.add(format!("mailer:{}", word.to_lowercase()));
            }
        }
    }
}

fn body_tokens(message: &Message<'_>, out: &mut Collector) {
    for part in &message.parts {
        if let Some(ct) = part.content_type() {
            let mime = match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            };
            out.add(format!("ct:{}", mime.to_lowercase()));
            if let Some(charset) = ct.attribute("charset") {
                out.add(format!("charset:{}", charset.to_lowercase()));
            }
        }
        if let Some(cte) = part.content_transfer_encoding() {
            out.add(format!("cte:{}", cte.to_lowercase()));
        }
        if let Some(ext) = part
            .attachment_name()
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, e)| e)
            .filter(|e| (1..=8).contains(&e.len()))
        {
            out.add(format!("attach:{}", ext.to_lowercase()));
        }
        // HTML links hide their host in attributes, which the rendered text drops.
        if let PartType::Html(html) = &part.body {
            out.links(prefix_of(html, MAX_TEXT_BYTES));
        }
    }
    // mail-parser lists the readable parts (plain text, else HTML as text) in
    // `text_body`, and renders HTML to text in `body_text`.
    for index in 0..message.text_body_count() {
        if let Some(text) = message.body_text(index) {
            out.body_text(&text);
        }
    }
}
