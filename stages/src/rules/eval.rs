//! The `eval:` functions implemented natively.
//!
//! SpamAssassin's evals are Perl functions; most need its plugins, the network (DNS
//! blocklists, Razor, Pyzor), Bayes or a received-header parser. The ones here are the
//! stock evals that carry real weight in the offline score set (the first column) and
//! need nothing but the message:
//!
//! - `check_for_missing_to_header()` — `MISSING_HEADERS`: no `To:` (or `Apparently-To:`).
//! - `subject_is_all_caps()` — `SUBJ_ALL_CAPS`: a multi-word subject in capitals.
//! - `check_illegal_chars(HEADER, RATIO, COUNT)` — `SUBJ_ILLEGAL_CHARS`,
//!   `HEAD_ILLEGAL_CHARS`: raw 8-bit or control bytes in headers.
//! - `check_for_mime_html()` / `check_for_mime_html_only()` — `HTML_MESSAGE`,
//!   `MIME_HTML_ONLY`: HTML, and HTML with no plain-text alternative.
//! - `html_image_only(MIN, MAX)` — `HTML_IMAGE_ONLY_*`: images with little text.
//! - `check_empty_message()` — `EMPTY_MESSAGE`: no text and no attachment.
//! - `check_unresolved_template()` — `UNRESOLVED_TEMPLATE`: `%VARIABLE` left in headers
//!   by a broken mass mailer.
//! - `check_msg_parse_flags('missing_head_body_separator')` — `MISSING_HB_SEP`.
//! - `check_body_length(N)` — the `__KAM_BODY_LENGTH_LT_*` sub-rules that many scored
//!   metas (short spam with a link, extortion) rest on: a body of at most N bytes.
//! - `check_header_count_range(HEADER, MIN, MAX)` — `HEADER_COUNT_CTYPE`,
//!   `HEADER_COUNT_SUBJECT`: a header repeated (distinct values counted), a cheap sign of
//!   broken ratware.
//! - `html_tag_exists(TAG)` — `HTML_TAG_EXIST_BGSOUND` and the `__TAG_EXISTS_*`
//!   sub-rules of the HTML and ratware metas: a tag opened anywhere in an HTML part.
//!
//! Every other eval is reported unsupported at load and scores nothing.

use super::message::View;

/// A native eval with its parsed arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Eval {
    MissingTo,
    SubjectAllCaps,
    IllegalChars {
        header: String,
        ratio: f64,
        count: usize,
    },
    MimeHtml,
    MimeHtmlOnly,
    HtmlImageOnly {
        min: usize,
        max: usize,
    },
    EmptyMessage,
    UnresolvedTemplate,
    MissingSeparator,
    BodyLength {
        max: usize,
    },
    HeaderCount {
        header: String,
        min: usize,
        max: usize,
    },
    HtmlTag(String),
}

/// Parses `name(args)`; `Err` says why it is unsupported.
pub(crate) fn parse(call: &str) -> Result<Eval, String> {
    let call = call.trim();
    let (name, args) = match call.find('(') {
        Some(open) => {
            let close = call.rfind(')').filter(|&c| c > open).ok_or("missing ')'")?;
            (call[..open].trim(), &call[open + 1..close])
        }
        None => (call, ""),
    };
    let args: Vec<String> = args
        .split(',')
        .map(|a| a.trim().trim_matches(['\'', '"']).to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let num = |i: usize| -> Result<f64, String> {
        args.get(i)
            .and_then(|a| a.parse::<f64>().ok())
            .ok_or_else(|| format!("eval {name}: argument {} is not a number", i + 1))
    };
    Ok(match name {
        "check_for_missing_to_header" => Eval::MissingTo,
        "subject_is_all_caps" => Eval::SubjectAllCaps,
        "check_illegal_chars" => Eval::IllegalChars {
            header: args
                .first()
                .cloned()
                .ok_or("eval check_illegal_chars: no header")?,
            ratio: num(1)?,
            count: num(2)? as usize,
        },
        "check_for_mime_html" => Eval::MimeHtml,
        "check_for_mime_html_only" => Eval::MimeHtmlOnly,
        "html_image_only" => Eval::HtmlImageOnly {
            min: num(0)? as usize,
            max: num(1)? as usize,
        },
        "check_empty_message" => Eval::EmptyMessage,
        "check_unresolved_template" => Eval::UnresolvedTemplate,
        "check_msg_parse_flags"
            if args.first().map(String::as_str) == Some("missing_head_body_separator") =>
        {
            Eval::MissingSeparator
        }
        "check_body_length" => Eval::BodyLength {
            max: num(0)? as usize,
        },
        "check_header_count_range" => Eval::HeaderCount {
            header: args
                .first()
                .cloned()
                .ok_or("eval check_header_count_range: no header")?,
            min: num(1)? as usize,
            max: num(2)? as usize,
        },
        "html_tag_exists" => Eval::HtmlTag(
            args.first()
                .map(|t| t.to_ascii_lowercase())
                .ok_or("eval html_tag_exists: no tag")?,
        ),
        other => return Err(format!("eval {other} is not implemented")),
    })
}

impl Eval {
    /// Whether the message satisfies the eval.
    pub(crate) fn check(&self, view: &View) -> bool {
        match self {
            Eval::MissingTo => {
                let to = view.header_decoded("To").unwrap_or_default();
                let apparently = view.header_decoded("Apparently-To").unwrap_or_default();
                to.trim().is_empty() && apparently.trim().is_empty()
            }
            Eval::SubjectAllCaps => subject_all_caps(view),
            Eval::IllegalChars {
                header,
                ratio,
                count,
            } => illegal_chars(view, header, *ratio, *count),
            Eval::MimeHtml => view.facts.html_parts > 0,
            Eval::MimeHtmlOnly => view.facts.html_parts > 0 && view.facts.text_parts == 0,
            Eval::HtmlImageOnly { min, max } => {
                view.facts.html_images > 0
                    && view.facts.html_text_chars >= *min
                    && view.facts.html_text_chars < *max
            }
            Eval::EmptyMessage => view.facts.body_text_chars == 0 && view.facts.binary_parts == 0,
            Eval::UnresolvedTemplate => view.headers.iter().any(|f| {
                // Headers that legitimately carry `%` codes.
                !["received", "x-mailer", "user-agent", "content-type"]
                    .contains(&f.name.to_ascii_lowercase().as_str())
                    && template_marker(&f.decoded)
            }),
            Eval::MissingSeparator => !view.facts.has_separator,
            Eval::BodyLength { max } => view.facts.body_len <= *max,
            Eval::HeaderCount { header, min, max } => {
                // SpamAssassin counts distinct values: the same header twice is a
                // relay's echo, not ratware.
                let mut values: Vec<&str> = view
                    .headers
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(header))
                    .map(|f| f.decoded.as_str())
                    .collect();
                values.sort_unstable();
                values.dedup();
                (*min..=*max).contains(&values.len())
            }
            Eval::HtmlTag(tag) => view.facts.html_tags.iter().any(|t| t == tag),
        }
    }
}

/// SpamAssassin's test: strip `Re:`/`Fwd:` prefixes; at least two words and ten
/// characters; and every letter upper-case.
fn subject_all_caps(view: &View) -> bool {
    let Some(subject) = view.header_decoded("Subject") else {
        return false;
    };
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let prefix = ["re:", "fwd:", "fw:", "aw:", "sv:", "antwort:"]
            .iter()
            .find(|p| lower.starts_with(*p));
        match prefix {
            Some(p) => s = s[p.len()..].trim_start(),
            None => break,
        }
    }
    if !s.contains(char::is_whitespace) || s.len() < 10 {
        return false;
    }
    let letters: Vec<char> = s.chars().filter(char::is_ascii_alphabetic).collect();
    // Scripts without case (or a non-ASCII subject) say nothing about shouting.
    if s.chars().any(|c| c.is_alphabetic() && !c.is_ascii()) {
        return false;
    }
    !letters.is_empty() && letters.iter().all(char::is_ascii_uppercase)
}

/// Raw bytes that RFC 5322 does not allow unencoded: 8-bit and control characters (tab,
/// CR and LF aside). A single currency or registered sign in a subject is forgiven, as
/// SpamAssassin does.
fn illegal_chars(view: &View, header: &str, ratio: f64, count: usize) -> bool {
    let header = header.strip_suffix(":raw").unwrap_or(header);
    let mut bytes: Vec<u8> = Vec::new();
    for f in &view.headers {
        if header == "ALL" || f.name.eq_ignore_ascii_case(header) {
            bytes.extend_from_slice(&f.raw_bytes);
        }
    }
    if bytes.is_empty() {
        return false;
    }
    let illegal_byte = |b: &u8| matches!(*b, 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f..=0xff);
    let mut illegal = bytes.iter().filter(|b| illegal_byte(b)).count();
    if illegal > 0 && header.eq_ignore_ascii_case("subject") {
        let text = String::from_utf8_lossy(&bytes);
        let exempt = text
            .chars()
            .filter(|c| matches!(c, '¢' | '£' | '®'))
            .count();
        if exempt == 1 {
            // One such sign in UTF-8 is two illegal bytes.
            illegal = illegal.saturating_sub(2);
        }
    }
    illegal as f64 / bytes.len() as f64 >= ratio && illegal >= count && illegal > 0
}

/// `%NAME` or `%%NAME%%`: an upper-case variable a template engine failed to fill.
fn template_marker(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%' && w[1].is_ascii_uppercase() && (w[2].is_ascii_uppercase() || w[2] == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_refuses_others() {
        assert_eq!(
            parse("check_illegal_chars('Subject','0.00','1')"),
            Ok(Eval::IllegalChars {
                header: "Subject".into(),
                ratio: 0.0,
                count: 1
            })
        );
        assert_eq!(
            parse("html_image_only(400, 600)"),
            Ok(Eval::HtmlImageOnly { min: 400, max: 600 })
        );
        assert!(parse("check_rbl('x', 'zen.example.')").is_err());
    }

    #[test]
    fn all_caps() {
        let view = View::parse(b"Subject: Re: FREE MONEY NOW!!\r\n\r\nx\r\n");
        assert!(subject_all_caps(&view));
        let view = View::parse(b"Subject: Free money now\r\n\r\nx\r\n");
        assert!(!subject_all_caps(&view));
        let view = View::parse(b"Subject: HELLO\r\n\r\nx\r\n");
        assert!(!subject_all_caps(&view));
    }
}
