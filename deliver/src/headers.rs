//! The SpamAssassin-style headers deliver writes on each copy, so the Sieve and procmail
//! rules users already have keep working, and the removal of forged ones.

use pampa_schemas::{Decision, Disposition, MailAnalysis, RecipientAnalysis};

/// Removes every `X-Spam-*` and `X-Pampa-*` header (with its continuation lines) from
/// the header block of an LF-terminated message: only pampa may say what pampa found,
/// or which folder and delivery id a copy has. So is every
/// `Authentication-Results` header that claims `authserv_id` (this host's name), as
/// RFC 8601 §5 asks: a sender must not be able to forge this host's verdicts. Results
/// of other hosts stay.
pub fn strip_forged_headers(message: &[u8], authserv_id: &str) -> Vec<u8> {
    strip_headers(message, |line| {
        starts_with_nocase(line, b"x-spam-")
            || starts_with_nocase(line, b"x-pampa-")
            || claims_authserv_id(line, authserv_id)
    })
}

/// Removes every `X-Pampa-*` header: on mail no stage scored, the verdict headers of
/// others stay (nobody vouches for them either way), but a sender must never choose a
/// copy's folder or delivery id.
pub fn strip_pampa_headers(message: &[u8]) -> Vec<u8> {
    strip_headers(message, |line| starts_with_nocase(line, b"x-pampa-"))
}

fn starts_with_nocase(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The message without the header fields (with their continuation lines) whose first
/// line `drop` says to drop; the body goes through untouched.
fn strip_headers(message: &[u8], drop: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    let mut dropping = false;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(rest.len());
        let (line, tail) = rest.split_at(end);
        if line == b"\n" {
            // The end of the header block: the body goes through untouched.
            out.extend_from_slice(rest);
            break;
        }
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = drop(line);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out
}

/// Whether a header line is `Authentication-Results: <authserv_id>…` (the id is the
/// first token of the value, before `;` or white space; compared without case).
fn claims_authserv_id(line: &[u8], authserv_id: &str) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    if authserv_id.is_empty()
        || line.len() < NAME.len()
        || !line[..NAME.len()].eq_ignore_ascii_case(NAME)
    {
        return false;
    }
    let value = String::from_utf8_lossy(&line[NAME.len()..]);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

/// The `X-Spam-*` block for one recipient's copy (LF line ends), in SpamAssassin's format:
/// `X-Spam-Status: Yes, score=6.2 required=5.0 tests=A,B`.
pub fn spam_headers(
    analysis: &MailAnalysis,
    recipient: &RecipientAnalysis,
    decision: &Decision,
) -> String {
    let score = analysis.score.unwrap_or(0.0);
    let is_spam = decision.disposition == Disposition::Spam;
    let required = recipient.level.as_ref().and_then(|l| l.cut);
    let mut tests: Vec<&str> = analysis
        .tags
        .iter()
        .chain(&recipient.tags)
        .map(|t| t.name.as_str())
        .collect();
    tests.sort_unstable();
    tests.dedup();
    let tests = if tests.is_empty() {
        "none".to_owned()
    } else {
        tests.join(",")
    };
    let stars = "*".repeat(score.clamp(0.0, 50.0) as usize);
    let mut status = format!(
        "X-Spam-Status: {}, score={score:.1} required={} tests=",
        if is_spam { "Yes" } else { "No" },
        required
            .map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "none".to_owned()),
    );
    // Fold long test lists the way SpamAssassin does, at commas.
    let mut line_len = status.len();
    for (i, test) in tests.split(',').enumerate() {
        let piece = if i == 0 {
            test.to_owned()
        } else {
            format!(",{test}")
        };
        if line_len + piece.len() > 78 && i > 0 {
            status.push_str(",\n\t");
            status.push_str(test);
            line_len = 1 + test.len();
        } else {
            status.push_str(&piece);
            line_len += piece.len();
        }
    }
    format!(
        "X-Spam-Flag: {}\nX-Spam-Score: {score:.1}\nX-Spam-Level: {stars}\n{status}\n",
        if is_spam { "YES" } else { "NO" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_headers_go_and_the_body_stays() {
        let msg = b"Received: x\nX-Spam-Status: No, forged\n\tcontinued\nX-SPAM-Flag: NO\nSubject: hi\n\nX-Spam-Flag: body text stays\n";
        assert_eq!(
            strip_forged_headers(msg, "mx.example.org"),
            b"Received: x\nSubject: hi\n\nX-Spam-Flag: body text stays\n"
        );
    }

    #[test]
    fn only_our_authentication_results_go() {
        let msg = b"Authentication-Results: MX.example.org; spf=pass\n\tsmtp.mailfrom=a@b\n\
Authentication-Results: mx.example.org.evil; dkim=pass\n\
Authentication-Results: other.example; dmarc=pass\n\
Subject: hi\n\nAuthentication-Results: mx.example.org; body\n";
        assert_eq!(
            strip_forged_headers(msg, "mx.example.org"),
            b"Authentication-Results: mx.example.org.evil; dkim=pass\n\
Authentication-Results: other.example; dmarc=pass\n\
Subject: hi\n\nAuthentication-Results: mx.example.org; body\n"
                .to_vec()
        );
    }
}
