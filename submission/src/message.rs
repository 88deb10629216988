//! What submission checks in a message and adds to it: the `From:` header must name
//! the user or an alias, and a message without `Date:` or `Message-ID:` gets them
//! (RFC 6409 §8), since a remote MX would score their absence as spam.

use chrono::{DateTime, Utc};
use mail_parser::{HeaderName, MessageParser};
use pampa_directory::{Directory, DirectoryError};
use pampa_ingest::message::{canonical_line_endings, header_block, Trace};

pub(crate) use pampa_ingest::message::header_message_id;

/// What the sender headers say about the sender.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Exactly one `From:`, and every sender address is the user's own or an alias.
    Owned,
    /// There is no `From:` address at all.
    Missing,
    /// More than one `From:` header (RFC 5322 §3.6 allows one): readers disagree on
    /// which they show, so the check could be passed with one and the reader shown the
    /// other.
    SeveralFrom,
    /// This address is not the user's.
    Forged(String),
}

/// The headers that name who sent a message; every address in any of them must be
/// the user's. `From:` is also required, once.
const SENDER_HEADERS: [HeaderName<'static>; 4] = [
    HeaderName::From,
    HeaderName::Sender,
    HeaderName::ResentFrom,
    HeaderName::ResentSender,
];

/// Checks every sender address against what `user` may send as.
pub(crate) async fn check_from(
    directory: &Directory,
    user: &str,
    data: &[u8],
) -> Result<HeaderCheck, DirectoryError> {
    let Some(message) = MessageParser::new().parse_headers(data) else {
        return Ok(HeaderCheck::Missing);
    };
    match message.header_values(HeaderName::From).count() {
        0 => return Ok(HeaderCheck::Missing),
        1 => {}
        _ => return Ok(HeaderCheck::SeveralFrom),
    }
    let mut from_addresses = 0;
    for name in SENDER_HEADERS {
        let is_from = name == HeaderName::From;
        let label = name.as_str().to_owned();
        for value in message.header_values(name) {
            // A value that is not an address list (garbage) names nobody the check
            // could accept: it counts as forged.
            let Some(list) = value.as_address() else {
                return Ok(HeaderCheck::Forged(format!("{label}: header")));
            };
            for address in list.iter() {
                let Some(address) = address.address() else {
                    continue;
                };
                from_addresses += usize::from(is_from);
                if !directory.may_send_as(user, address).await? {
                    return Ok(HeaderCheck::Forged(address.to_owned()));
                }
            }
        }
    }
    if from_addresses == 0 {
        return Ok(HeaderCheck::Missing);
    }
    Ok(HeaderCheck::Owned)
}

/// Whether the header block has a field of this name.
fn has_header(headers: &[u8], name: &[u8]) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| line[..colon].trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// The message as it will be stored: CRLF line ends, the `Received:` trace header on
/// top, and `Date:` and `Message-ID:` added when missing.
pub(crate) fn complete(
    data: Vec<u8>,
    helo: &str,
    ip: &str,
    hostname: &str,
    id: &str,
    at: DateTime<Utc>,
) -> Vec<u8> {
    let data = without_bcc(canonical_line_endings(data));
    let trace = Trace {
        helo,
        ip,
        hostname,
        tls: true,
        esmtp: true,
        authenticated: true,
        id,
        single_recipient: None,
        at,
    }
    .header();
    let headers = header_block(&data);
    let mut added = String::new();
    if !has_header(headers, b"date") {
        added.push_str(&format!("Date: {}\r\n", at.to_rfc2822()));
    }
    if !has_header(headers, b"message-id") {
        added.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    }
    let mut body = Vec::with_capacity(trace.len() + added.len() + data.len());
    body.extend_from_slice(trace.as_bytes());
    body.extend_from_slice(added.as_bytes());
    body.extend_from_slice(&data);
    body
}

/// The message without its `Bcc:` header (RFC 5322 §3.6.3 leaves removing it to the
/// sending side; left in, it would tell every recipient who else got a copy).
fn without_bcc(data: Vec<u8>) -> Vec<u8> {
    let headers_end = header_block(&data).len();
    let mut out = Vec::with_capacity(data.len());
    let mut skipping = false;
    let mut at = 0;
    while at < headers_end {
        let end = memchr::memchr(b'\n', &data[at..headers_end]).map_or(headers_end, |i| at + i + 1);
        let line = &data[at..end];
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            skipping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        at = end;
    }
    if out.len() == headers_end {
        return data;
    }
    out.extend_from_slice(&data[headers_end..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn bcc_is_removed_with_its_continuation_lines() {
        let data = b"From: a@x\r\nBcc: secret@y,\r\n  other@z\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n".to_vec();
        assert_eq!(
            super::without_bcc(data),
            b"From: a@x\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n".to_vec()
        );
        let plain = b"From: a@x\r\n\r\nbody\r\n".to_vec();
        assert_eq!(super::without_bcc(plain.clone()), plain);
    }

    use super::*;

    #[test]
    fn missing_date_and_message_id_are_added_once() {
        let at = Utc::now();
        let out = complete(
            b"From: a@x\nSubject: s\n\nbody\n".to_vec(),
            "h",
            "192.0.2.1",
            "mx",
            "ID1",
            at,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Received: from h ([192.0.2.1])"));
        assert!(text.contains("with ESMTPSA id ID1"));
        assert!(text.contains("\r\nMessage-ID: <ID1@mx>\r\n"));
        assert!(text.contains("\r\nDate: "));
        assert!(!text.contains("body\n") || text.contains("body\r\n"));
        let kept = complete(
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-Id: <m@x>\r\nFrom: a@x\r\n\r\nb\r\n"
                .to_vec(),
            "h",
            "192.0.2.1",
            "mx",
            "ID2",
            at,
        );
        let text = String::from_utf8(kept).unwrap();
        assert_eq!(text.matches("Date:").count(), 1);
        assert_eq!(text.to_ascii_lowercase().matches("message-id:").count(), 1);
    }
}
