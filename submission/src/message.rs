//! What submission checks in a message and adds to it: the `From:` header must name
//! the user or an alias, and a message without `Date:` or `Message-ID:` gets them
//! (RFC 6409 §8), since a remote MX would score their absence as spam.

use chrono::{DateTime, Utc};
use mail_parser::MessageParser;
use pampa_directory::{Directory, DirectoryError};
use pampa_ingest::message::{canonical_line_endings, header_block, Trace};

pub(crate) use pampa_ingest::message::header_message_id;

/// What the `From:` header says about the sender.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Every address in it is the user's own or an alias.
    Owned,
    /// There is no `From:` address at all.
    Missing,
    /// This address is not the user's.
    Forged(String),
}

/// Checks every `From:` address against what `user` may send as.
pub(crate) async fn check_from(
    directory: &Directory,
    user: &str,
    data: &[u8],
) -> Result<HeaderCheck, DirectoryError> {
    let Some(message) = MessageParser::new().parse_headers(data) else {
        return Ok(HeaderCheck::Missing);
    };
    let addresses: Vec<String> = message
        .from()
        .map(|from| {
            from.iter()
                .filter_map(|a| a.address())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if addresses.is_empty() {
        return Ok(HeaderCheck::Missing);
    }
    for address in addresses {
        if !directory.may_send_as(user, &address).await? {
            return Ok(HeaderCheck::Forged(address));
        }
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
    let data = canonical_line_endings(data);
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

#[cfg(test)]
mod tests {
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
