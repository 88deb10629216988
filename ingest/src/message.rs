//! What ingest (and submission) add to a message and read from it.

use chrono::{DateTime, Utc};

/// The `Received:` trace header (RFC 5321 §4.4) that ingest puts on top.
pub struct Trace<'a> {
    /// What the client said in EHLO/HELO.
    pub helo: &'a str,
    /// The client IP.
    pub ip: &'a str,
    /// Our host name.
    pub hostname: &'a str,
    /// Whether the session ran inside TLS.
    pub tls: bool,
    /// EHLO rather than HELO.
    pub esmtp: bool,
    /// Whether the client authenticated (submission): the protocol gets its `A`
    /// (RFC 3848).
    pub authenticated: bool,
    /// pampa's id of the message.
    pub id: &'a str,
    /// The recipient, named only when there is one (RFC 5321 §7.2).
    pub single_recipient: Option<&'a str>,
    /// When the message arrived.
    pub at: DateTime<Utc>,
}

impl Trace<'_> {
    /// The header, CRLF-terminated and folded.
    pub fn header(&self) -> String {
        let protocol = match (self.esmtp, self.tls, self.authenticated) {
            (true, true, true) => "ESMTPSA",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, false, false) => "ESMTP",
            (false, true, _) => "SMTPS",
            (false, false, _) => "SMTP",
        };
        let helo: String = self
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let mut header = format!(
            "Received: from {} ([{}])\r\n\tby {} (pampa) with {} id {}",
            if helo.is_empty() { "unknown" } else { &helo },
            self.ip,
            self.hostname,
            protocol,
            self.id
        );
        if let Some(rcpt) = self.single_recipient {
            header.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        header.push_str(&format!("; {}\r\n", self.at.to_rfc2822()));
        header
    }
}

/// The end of the header block, or the whole message if it has no body.
pub fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    &message[..end]
}

/// The `Message-ID:` header's value, unfolded, if there is one.
pub fn header_message_id(message: &[u8]) -> Option<String> {
    let headers = header_block(message);
    let mut lines = headers.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"message-id") {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_owned();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.push_str(String::from_utf8_lossy(next).trim());
                lines.next();
            } else {
                break;
            }
        }
        let value = value.trim().to_owned();
        return (!value.is_empty()).then(|| value.chars().take(998).collect());
    }
    None
}

/// Makes every line end in CRLF: a bare LF becomes CRLF, as Postfix's cleanup does, so
/// stores and signatures downstream see one canonical form.
pub fn canonical_line_endings(data: Vec<u8>) -> Vec<u8> {
    // memchr finds the line ends; most messages have none bare and are returned as is.
    let is_bare = |i: usize| i == 0 || data[i - 1] != b'\r';
    let bare = memchr::memchr_iter(b'\n', &data)
        .filter(|&i| is_bare(i))
        .count();
    if bare == 0 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + bare);
    let mut from = 0;
    for i in memchr::memchr_iter(b'\n', &data).filter(|&i| is_bare(i)) {
        out.extend_from_slice(&data[from..i]);
        out.extend_from_slice(b"\r\n");
        from = i + 1;
    }
    out.extend_from_slice(&data[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_folded_message_id_in_the_headers_only() {
        let msg =
            b"Subject: x\r\nMessage-Id:\r\n <abc@example.org>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(header_message_id(msg).as_deref(), Some("<abc@example.org>"));
        assert_eq!(
            header_message_id(b"Subject: x\r\n\r\nMessage-ID: <b@x>\r\n"),
            None
        );
    }

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_stays() {
        assert_eq!(
            canonical_line_endings(b"a\nb\r\nc\n".to_vec()),
            b"a\r\nb\r\nc\r\n"
        );
        assert_eq!(canonical_line_endings(b"a\r\n".to_vec()), b"a\r\n");
        assert_eq!(
            canonical_line_endings(b"\nx\n\n".to_vec()),
            b"\r\nx\r\n\r\n"
        );
    }

    #[test]
    fn received_header_names_client_and_recipient() {
        let trace = Trace {
            helo: "client.example",
            ip: "192.0.2.1",
            hostname: "mx.example.org",
            tls: true,
            esmtp: true,
            authenticated: false,
            id: "abc",
            single_recipient: Some("alice@example.org"),
            at: DateTime::UNIX_EPOCH,
        };
        let h = trace.header();
        assert!(h.starts_with("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (pampa) with ESMTPS id abc"));
        assert!(h.contains("for <alice@example.org>;"));
        assert!(h.ends_with("+0000\r\n"));
    }
}
