//! Delivery status notifications (RFC 3464): the `multipart/report` bounce sent to the
//! envelope sender when mail cannot be delivered.
//!
//! The message is written by hand rather than with mail-builder because the three
//! parts have fixed, tiny layouts and the per-recipient fields must be exact RFC 3464
//! syntax, which a general MIME builder would not help with.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders as _};

/// Preferred line length (RFC 5322 2.1.1) for folded fields and wrapped text.
const LINE_WIDTH: usize = 78;
/// Longest run we put on one line when a word cannot be folded; keeps every line well
/// under the 998-character hard limit including the field name and indent.
const MAX_CHUNK: usize = 900;
/// The original's header block is cut beyond this, at a line boundary, so a message
/// with a pathological header block cannot make the bounce large.
const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// One recipient that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The recipient address, as given in RCPT TO.
    pub recipient: String,
    /// The enhanced status code (RFC 3463), such as "5.1.1".
    pub status: String,
    /// The remote reply, such as "550 5.1.1 user unknown", or our own explanation.
    pub diagnostic: String,
    /// The host that gave the reply, when one did.
    pub remote_mta: Option<String>,
}

/// Everything needed to write one bounce.
#[derive(Debug, Clone)]
pub struct Bounce<'a> {
    /// Our hostname.
    pub reporting_mta: &'a str,
    /// The envelope sender of the original, who gets the DSN.
    pub original_sender: &'a str,
    /// pampa's id of the original (X-Pampa-Message-Id and Original-Envelope-Id).
    pub message_id: &'a str,
    /// When the original was received.
    pub arrival: DateTime<Utc>,
    /// The recipients that failed.
    pub recipients: &'a [FailedRecipient],
    /// The original message; only its header block goes into the bounce.
    pub original: &'a [u8],
    /// True when delivery gave up because the message stayed queued too long.
    pub expired: bool,
}

/// Builds the whole DSN message (CRLF line ends): From `MAILER-DAEMON@{reporting_mta}`,
/// To the original sender, Subject "Undelivered Mail Returned to Sender",
/// `Auto-Submitted: auto-replied`, and a `multipart/report; report-type=delivery-status`
/// body of three parts: a human explanation, the `message/delivery-status` fields, and
/// the original's header block as `text/rfc822-headers`.
pub fn build(bounce: &Bounce) -> Vec<u8> {
    build_at(bounce, Utc::now())
}

/// [`build`] with the current time given, so tests are deterministic.
fn build_at(bounce: &Bounce, now: DateTime<Utc>) -> Vec<u8> {
    let host = header_safe(bounce.reporting_mta);
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    let sender = header_safe(strip_brackets(bounce.original_sender));
    let id = header_safe(bounce.message_id);
    let token = unique_token();
    let boundary = format!("=_pampa_dsn_{token}");
    let date = now.to_rfc2822();

    let human = human_text(bounce, &host, &id, now);
    let status = delivery_status(bounce, &host, &id, now);
    let headers = original_headers(bounce.original);

    let mut out = String::with_capacity(2048 + headers.len());
    push_field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    push_field(&mut out, "To", &format!("<{sender}>"));
    push_field(&mut out, "Subject", "Undelivered Mail Returned to Sender");
    push_field(&mut out, "Date", &date);
    push_field(
        &mut out,
        "Message-ID",
        &format!("<{}.{token}@{host}>", now.format("%Y%m%d%H%M%S")),
    );
    // RFC 3834: marks the bounce as automatic so that auto-responders and our own
    // may_bounce() never answer it, which is what prevents bounce loops.
    push_field(&mut out, "Auto-Submitted", "auto-replied");
    if !id.is_empty() {
        push_field(&mut out, "X-Pampa-Message-Id", &id);
    }
    push_field(&mut out, "MIME-Version", "1.0");
    push_field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    out.push_str("\r\n");
    out.push_str("This is a MIME-encapsulated message.\r\n\r\n");

    push_part(
        &mut out,
        &boundary,
        "Notification",
        "text/plain; charset=utf-8",
        &human,
    );
    push_part(
        &mut out,
        &boundary,
        "Delivery report",
        "message/delivery-status",
        &status,
    );
    let headers_text = String::from_utf8_lossy(&headers);
    push_part(
        &mut out,
        &boundary,
        "Undelivered Message Headers",
        "text/rfc822-headers",
        &headers_text,
    );
    out.push_str("--");
    out.push_str(&boundary);
    out.push_str("--\r\n");
    out.into_bytes()
}

/// Appends one body part; `content` ends with CRLF.
fn push_part(out: &mut String, boundary: &str, description: &str, ctype: &str, content: &str) {
    out.push_str("--");
    out.push_str(boundary);
    out.push_str("\r\n");
    push_field(out, "Content-Description", description);
    push_field(out, "Content-Type", ctype);
    // 8bit only when needed: UTF-8 addresses (SMTPUTF8) or 8-bit original headers.
    let cte = if content.is_ascii() { "7bit" } else { "8bit" };
    push_field(out, "Content-Transfer-Encoding", cte);
    out.push_str("\r\n");
    out.push_str(content);
    // The CRLF before the next boundary belongs to the delimiter (RFC 2046 5.1.1),
    // so add one to keep the content's own final line end.
    out.push_str("\r\n");
}

/// The human-readable part.
fn human_text(bounce: &Bounce, host: &str, id: &str, now: DateTime<Utc>) -> String {
    let mut text = String::new();
    text.push_str(&format!("This is the mail system at host {host}.\r\n\r\n"));
    let intro = if bounce.expired {
        format!(
            "Your message could not be delivered to one or more recipients. The mail \
             system kept trying and gave up after {}.",
            describe_age(now - bounce.arrival)
        )
    } else {
        "Your message could not be delivered to one or more recipients. It is \
         attached below (headers only)."
            .to_owned()
    };
    push_wrapped(&mut text, &intro, "", "");
    text.push_str("\r\n");
    if !id.is_empty() {
        text.push_str(&format!("Message id: {id}\r\n\r\n"));
    }
    for rcpt in bounce.recipients {
        let addr = header_safe(strip_brackets(&rcpt.recipient));
        let remote = rcpt
            .remote_mta
            .as_deref()
            .map(header_safe)
            .filter(|h| !h.is_empty());
        let diagnostic = header_safe(&rcpt.diagnostic);
        let line = match (remote, diagnostic.is_empty()) {
            (Some(remote), false) => format!("<{addr}>: host {remote} said:"),
            (Some(remote), true) => format!("<{addr}>: delivery to host {remote} failed"),
            (None, false) => format!("<{addr}>:"),
            (None, true) => format!("<{addr}>: delivery failed"),
        };
        push_wrapped(&mut text, &line, "", "    ");
        if !diagnostic.is_empty() {
            push_wrapped(&mut text, &diagnostic, "    ", "    ");
        }
        text.push_str("\r\n");
    }
    text
}

/// "3 days", "1 day", or hours when under a day, for the expiry wording.
fn describe_age(age: chrono::Duration) -> String {
    let days = age.num_days();
    if days >= 1 {
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else {
        let hours = age.num_hours().max(1);
        format!("{hours} hour{}", if hours == 1 { "" } else { "s" })
    }
}

/// The `message/delivery-status` content: per-message fields, then one block per
/// recipient, blocks separated by blank lines (RFC 3464 2.1).
fn delivery_status(bounce: &Bounce, host: &str, id: &str, now: DateTime<Utc>) -> String {
    let mut ds = String::new();
    push_field(&mut ds, "Reporting-MTA", &format!("dns; {host}"));
    if !id.is_empty() {
        push_field(&mut ds, "Original-Envelope-Id", id);
    }
    push_field(&mut ds, "Arrival-Date", &bounce.arrival.to_rfc2822());
    for rcpt in bounce.recipients {
        ds.push_str("\r\n");
        let addr = header_safe(strip_brackets(&rcpt.recipient));
        push_field(&mut ds, "Final-Recipient", &format!("rfc822; {addr}"));
        push_field(&mut ds, "Action", "failed");
        push_field(
            &mut ds,
            "Status",
            &final_status(&rcpt.status, bounce.expired),
        );
        let remote = rcpt.remote_mta.as_deref().map(header_safe);
        if let Some(remote) = remote.filter(|r| !r.is_empty()) {
            push_field(&mut ds, "Remote-MTA", &format!("dns; {remote}"));
        }
        let diagnostic = header_safe(&rcpt.diagnostic);
        if !diagnostic.is_empty() {
            push_field(&mut ds, "Diagnostic-Code", &format!("smtp; {diagnostic}"));
        }
        push_field(&mut ds, "Last-Attempt-Date", &now.to_rfc2822());
    }
    ds
}

/// The Status field. A valid code is kept, including a 4.x.x on expiry: the last
/// transient reason ("mailbox full") tells the sender more than a generic code. Junk
/// or a missing code becomes 4.4.7 (delivery time expired) or 5.0.0.
fn final_status(status: &str, expired: bool) -> String {
    let status = status.trim();
    if is_status_code(status) {
        status.to_owned()
    } else if expired {
        "4.4.7".to_owned()
    } else {
        "5.0.0".to_owned()
    }
}

/// RFC 3463 syntax: class "." subject "." detail, class 2, 4 or 5.
fn is_status_code(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)
}

/// The original's header block with CRLF line ends, cut at a line boundary past
/// [`MAX_ORIGINAL_HEADERS`]. Ends with CRLF unless empty.
fn original_headers(original: &[u8]) -> Vec<u8> {
    let end = header_block_end(original);
    let block = &original[..end];
    let mut out = Vec::with_capacity(block.len().min(MAX_ORIGINAL_HEADERS) + 2);
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if out.len() + line.len() + 2 > MAX_ORIGINAL_HEADERS {
            break;
        }
        // A stray CR inside a line would read as a line end to some parsers.
        out.extend(line.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Offset where the header block ends (the blank line), or the whole input when there
/// is no body.
fn header_block_end(msg: &[u8]) -> usize {
    // A message that starts with a blank line has no headers at all.
    if msg.starts_with(b"\r\n") || msg.starts_with(b"\n") {
        return 0;
    }
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &msg[pos..]) {
        let next = pos + nl + 1;
        let rest = &msg[next..];
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return next;
        }
        pos = next;
    }
    msg.len()
}

/// Appends `name: value` folded at spaces so lines stay near [`LINE_WIDTH`] and always
/// under 998 characters.
fn push_field(out: &mut String, name: &str, value: &str) {
    push_wrapped(out, &format!("{name}: {value}"), "", " ");
}

/// Appends `text` as lines of at most [`LINE_WIDTH`] where the words allow, each ending
/// in CRLF. `first` prefixes the first line, `cont` every following one. A word longer
/// than [`MAX_CHUNK`] is split, which is the only way to stay under the hard limit.
fn push_wrapped(out: &mut String, text: &str, first: &str, cont: &str) {
    let mut line = String::from(first);
    let mut line_has_word = false;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for chunk in chunks(word, MAX_CHUNK) {
            if line_has_word && line.len() + 1 + chunk.len() > LINE_WIDTH {
                out.push_str(&line);
                out.push_str("\r\n");
                line = String::from(cont);
                line_has_word = false;
            }
            if line_has_word {
                line.push(' ');
            }
            line.push_str(chunk);
            line_has_word = true;
        }
    }
    out.push_str(&line);
    out.push_str("\r\n");
}

/// Splits `s` into pieces of at most `max` bytes on char boundaries.
fn chunks(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max.max(1));
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // `max` is smaller than the first character: take that character whole
            // rather than yield empty pieces forever.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// Makes text from the network safe for a header line: CR, LF and other control
/// characters become spaces, so a crafted remote reply cannot inject header lines or
/// end the header block early.
fn header_safe(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.trim().to_owned()
}

/// `<addr>` to `addr`; envelope addresses arrive in either form.
fn strip_brackets(addr: &str) -> &str {
    let t = addr.trim();
    t.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(t)
}

/// A token unique per bounce for the Message-ID and the MIME boundary.
fn unique_token() -> String {
    use rand_core::RngCore as _;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 12];
    if rand_core::OsRng.try_fill_bytes(&mut random).is_err() {
        // No system randomness: time and a process counter are still unique enough
        // for a boundary that must only not occur in our own, known content.
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        random[..8].copy_from_slice(&nanos.to_be_bytes());
        random[8..].copy_from_slice(&(std::process::id()).to_be_bytes());
    }
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut token = String::with_capacity(40);
    for b in random {
        token.push_str(&format!("{b:02x}"));
    }
    token.push_str(&format!(".{count:x}"));
    token
}

/// Whether a message may be bounced at all.
///
/// Never to the null sender ("" or "<>"), never to mail from MAILER-DAEMON or
/// postmaster, and never when the original is itself a report (DSN, MDN: any
/// `multipart/report` or a bare `message/delivery-status`): these rules stop bounce
/// loops.
///
/// `Auto-Submitted:` and `Precedence: bulk|list` do not stop a DSN, as they do not in
/// Postfix: RFC 3834 governs auto-responders, not the MTA's reports (RFC 3461 expects
/// a DSN for every non-null sender), and list software learns of dead addresses only
/// from bounces. The relay bounces only to senders submission verified.
pub fn may_bounce(sender: &str, original: &[u8]) -> bool {
    let sender = strip_brackets(sender);
    if sender.is_empty() {
        return false;
    }
    let local = sender.rsplit_once('@').map_or(sender, |(l, _)| l);
    if local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster") {
        return false;
    }
    // Unparseable headers say nothing against bouncing; the sender decides then.
    let Some(message) = MessageParser::default().parse_headers(original) else {
        return true;
    };
    if let Some(ct) = message.content_type() {
        let ctype = ct.ctype();
        let subtype = ct.subtype().unwrap_or_default();
        if (ctype.eq_ignore_ascii_case("multipart") && subtype.eq_ignore_ascii_case("report"))
            || (ctype.eq_ignore_ascii_case("message")
                && subtype.eq_ignore_ascii_case("delivery-status"))
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use mail_parser::PartType;

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.net>\r\n\
        To: bob@example.org, carol@example.org\r\n\
        Subject: Quarterly report\r\n\
        Message-ID: <orig-1@example.net>\r\n\
        \r\n\
        Secret body text that must not be in the bounce.\r\n";

    fn recipients() -> Vec<FailedRecipient> {
        vec![
            FailedRecipient {
                recipient: "bob@example.org".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 user unknown".into(),
                remote_mta: Some("mx1.example.org".into()),
            },
            FailedRecipient {
                recipient: "<carol@example.org>".into(),
                status: "4.2.2".into(),
                // A long reply with an attempted header injection.
                diagnostic: format!(
                    "452-4.2.2 mailbox full\r\nX-Injected: yes\n452 4.2.2 {}",
                    "word ".repeat(400)
                ),
                remote_mta: Some("mx2.example.org\r\nX-Evil: 1".into()),
            },
            FailedRecipient {
                recipient: "dave@example.org".into(),
                status: "garbage".into(),
                diagnostic: String::new(),
                remote_mta: None,
            },
        ]
    }

    fn bounce<'a>(rcpts: &'a [FailedRecipient], expired: bool) -> Bounce<'a> {
        Bounce {
            reporting_mta: "relay.pampa.test",
            original_sender: "alice@example.net",
            message_id: "01HXYZ",
            arrival: Utc.with_ymd_and_hms(2024, 1, 1, 10, 0, 0).unwrap(),
            recipients: rcpts,
            original: ORIGINAL,
            expired,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 6, 11, 0, 0).unwrap()
    }

    /// Every line ends in CRLF and none exceeds 998 characters.
    fn assert_wire_format(raw: &[u8]) {
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        for line in raw.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line of {} bytes", line.len());
        }
        assert!(raw.ends_with(b"\r\n"));
    }

    #[test]
    fn dsn_structure() {
        let rcpts = recipients();
        let raw = build_at(&bounce(&rcpts, false), now());
        assert_wire_format(&raw);
        let text = String::from_utf8(raw.clone()).expect("utf-8");

        let msg = MessageParser::default().parse(&raw).expect("parses");
        let ct = msg.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("MAILER-DAEMON@relay.pampa.test")
        );
        assert_eq!(
            msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("alice@example.net")
        );
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert!(msg.date().is_some());
        assert!(msg
            .message_id()
            .is_some_and(|id| id.ends_with("@relay.pampa.test")));
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(
            msg.header_raw("X-Pampa-Message-Id").map(str::trim),
            Some("01HXYZ")
        );

        let PartType::Multipart(children) = &msg.root_part().body else {
            panic!("root is not multipart");
        };
        assert_eq!(children.len(), 3);
        let part = |i: usize| &msg.parts[children[i] as usize];
        let types: Vec<String> = (0..3)
            .map(|i| {
                let ct = part(i).content_type().expect("part type");
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        // Human part names each recipient and the remote reply.
        let human = String::from_utf8_lossy(part(0).contents()).into_owned();
        assert!(
            human.contains("<bob@example.org>: host mx1.example.org said:"),
            "{human}"
        );
        assert!(human.contains("550 5.1.1 user unknown"), "{human}");
        assert!(human.contains("<carol@example.org>"), "{human}");
        assert!(
            human.contains("<dave@example.org>: delivery failed"),
            "{human}"
        );

        // Delivery-status fields, per message and per recipient.
        let ds = String::from_utf8_lossy(part(1).contents()).into_owned();
        let blocks: Vec<&str> = ds
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .collect();
        assert_eq!(blocks.len(), 4, "{ds}");
        assert!(blocks[0].contains("Reporting-MTA: dns; relay.pampa.test"));
        assert!(blocks[0].contains("Arrival-Date: Mon, 1 Jan 2024 10:00:00 +0000"));
        assert!(blocks[0].contains("Original-Envelope-Id: 01HXYZ"));
        for (block, (addr, status)) in blocks[1..].iter().zip([
            ("bob@example.org", "5.1.1"),
            ("carol@example.org", "4.2.2"),
            ("dave@example.org", "5.0.0"),
        ]) {
            assert!(
                block.contains(&format!("Final-Recipient: rfc822; {addr}\r\n")),
                "{block}"
            );
            assert!(block.contains("Action: failed\r\n"), "{block}");
            assert!(block.contains(&format!("Status: {status}\r\n")), "{block}");
        }
        assert!(blocks[1].contains("Remote-MTA: dns; mx1.example.org\r\n"));
        assert!(blocks[1].contains("Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"));
        assert!(!blocks[3].contains("Diagnostic-Code"));
        assert!(!blocks[3].contains("Remote-MTA"));

        // Injection attempts stay inside their folded field.
        for line in ds.lines().chain(text.lines()) {
            assert!(!line.starts_with("X-Injected"), "{line}");
            assert!(!line.starts_with("X-Evil"), "{line}");
        }
        // The long diagnostic was folded onto continuation lines.
        let diag_start = ds
            .find("Diagnostic-Code: smtp; 452-4.2.2")
            .expect("carol diag");
        let diag: Vec<&str> = ds[diag_start..].split("\r\n").take(3).collect();
        assert!(
            diag[1].starts_with(' ') && diag[2].starts_with(' '),
            "{diag:?}"
        );

        // Only the original's headers are included.
        let headers = String::from_utf8_lossy(part(2).contents()).into_owned();
        assert!(headers.contains("Subject: Quarterly report"), "{headers}");
        assert!(
            headers.contains("Message-ID: <orig-1@example.net>"),
            "{headers}"
        );
        assert!(!text.contains("Secret body"));
    }

    #[test]
    fn expired_wording_and_status() {
        let rcpts = vec![FailedRecipient {
            recipient: "bob@example.org".into(),
            status: String::new(),
            diagnostic: "connection refused".into(),
            remote_mta: None,
        }];
        let raw = build_at(&bounce(&rcpts, true), now());
        assert_wire_format(&raw);
        let text = String::from_utf8(raw).expect("utf-8");
        assert!(text.contains("gave up after 5 days"), "{text}");
        assert!(text.contains("Status: 4.4.7\r\n"), "{text}");
        assert!(text.contains("Action: failed\r\n"), "{text}");
    }

    #[test]
    fn bare_lf_original_and_unique_ids() {
        let rcpts = recipients();
        let mut b = bounce(&rcpts, false);
        b.original = b"Subject: lf only\nFrom: a@b.c\n\nbody\n";
        let one = build(&b);
        let two = build(&b);
        assert_wire_format(&one);
        let one_msg = MessageParser::default().parse(&one).expect("parses");
        let two_msg = MessageParser::default().parse(&two).expect("parses");
        assert_ne!(one_msg.message_id(), two_msg.message_id());
        let text = String::from_utf8(one).expect("utf-8");
        assert!(
            text.contains("Subject: lf only\r\nFrom: a@b.c\r\n"),
            "{text}"
        );
        assert!(!text.contains("body\r\n--"));
    }

    #[test]
    fn header_block_edges() {
        assert_eq!(original_headers(b""), b"");
        assert_eq!(original_headers(b"\r\nbody"), b"");
        assert_eq!(original_headers(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(
            original_headers(b"A: 1\r\n folded\r\n\r\nbody"),
            b"A: 1\r\n folded\r\n"
        );
        let huge = format!("X: {}\r\n", "a".repeat(100)).repeat(2000);
        assert!(original_headers(huge.as_bytes()).len() <= MAX_ORIGINAL_HEADERS);
    }

    #[test]
    fn status_codes() {
        assert!(is_status_code("5.1.1"));
        assert!(is_status_code("4.7.123"));
        assert!(!is_status_code("3.1.1"));
        assert!(!is_status_code("5.1"));
        assert!(!is_status_code("5.1.1.1"));
        assert!(!is_status_code("5.a.1"));
        assert_eq!(final_status("550", false), "5.0.0");
        assert_eq!(final_status("4.2.2", true), "4.2.2");
        assert_eq!(final_status("", true), "4.4.7");
    }

    #[test]
    fn may_bounce_cases() {
        let plain = b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n";
        assert!(may_bounce("alice@example.net", plain));
        assert!(may_bounce("<alice@example.net>", plain));
        assert!(!may_bounce("", plain));
        assert!(!may_bounce("<>", plain));
        assert!(!may_bounce("MAILER-DAEMON@example.net", plain));
        assert!(!may_bounce("postmaster@example.net", plain));
        assert!(may_bounce("alice@example.net", b""));

        let cases: [(&[u8], bool); 9] = [
            (b"Auto-Submitted: no\r\n\r\nx", true),
            (b"Auto-Submitted: No (really)\r\n\r\nx", true),
            (b"Auto-Submitted: auto-replied\r\n\r\nx", true),
            (b"auto-submitted:\r\n auto-generated\r\n\r\nx", true),
            (b"Precedence: bulk\r\n\r\nx", true),
            (b"Precedence: JUNK\r\n\r\nx", true),
            (b"Precedence: list\r\n\r\nx", true),
            (b"Precedence: first-class\r\n\r\nx", true),
            (
                b"Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=x\r\n\r\n",
                false,
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(
                may_bounce("alice@example.net", msg),
                expected,
                "{}",
                String::from_utf8_lossy(msg)
            );
        }

        // Our own bounces are never bounced.
        let rcpts = recipients();
        let dsn = build(&bounce(&rcpts, false));
        assert!(!may_bounce("alice@example.net", &dsn));
    }

    #[test]
    fn chunks_respect_char_boundaries() {
        assert_eq!(chunks("abcdef", 4).collect::<Vec<_>>(), ["abcd", "ef"]);
        assert_eq!(chunks("ééé", 3).collect::<Vec<_>>(), ["é", "é", "é"]);
        assert_eq!(chunks("€", 1).collect::<Vec<_>>(), ["€"]);
    }

    #[test]
    fn folding_keeps_lines_short() {
        let mut out = String::new();
        push_field(
            &mut out,
            "Diagnostic-Code",
            &format!("smtp; {}", "x".repeat(3000)),
        );
        for line in out.split("\r\n") {
            assert!(line.len() < 998, "{}", line.len());
        }
        let mut out = String::new();
        push_field(&mut out, "Subject", "short");
        assert_eq!(out, "Subject: short\r\n");
    }
}
