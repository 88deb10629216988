//! Perl regular expressions, as SpamAssassin rules write them, translated to the `regex`
//! crate, or to `fancy-regex` when a pattern needs backtracking (lookaround,
//! backreferences, atomic groups, possessive quantifiers).
//!
//! The translation is by hand because no crate reads Perl's syntax: Perl treats a `{`
//! that opens no quantifier as a literal, escapes any punctuation freely (`\/`, `\<`,
//! which `regex` reads as a word boundary), nests `[` in classes literally, and has `\Q`,
//! `\h`, `\Z` and `(?#…)` that `regex` lacks.
//!
//! `\w`, `\d`, `\s` and `\b` become their ASCII forms, as Perl has them on the byte
//! strings SpamAssassin matches; it is also what keeps the lazy DFA fast on non-ASCII
//! text (a Unicode word boundary makes it give up).

use std::fmt;

/// Backtracking steps one `fancy-regex` match may take before it gives up (and the rule
/// does not hit): hostile text must not stall a scan.
const BACKTRACK_LIMIT: usize = 200_000;
/// Compiled-program size limit of one pattern.
const SIZE_LIMIT: usize = 8 << 20;

/// A compiled rule pattern.
#[derive(Debug, Clone)]
pub(crate) enum Re {
    /// The linear-time engine; such patterns also go into a `RegexSet`.
    Std(regex::Regex),
    /// The backtracking fallback.
    Fancy(Box<fancy_regex::Regex>),
}

impl Re {
    /// Whether the pattern matches; a backtracking engine that runs out of steps counts
    /// as no match.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        match self {
            Re::Std(re) => re.is_match(text),
            Re::Fancy(re) => re.is_match(text).unwrap_or(false),
        }
    }
}

/// A pattern ready for the `regex` crate, or why it is not.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    /// The compiled pattern.
    pub(crate) re: Re,
    /// The translated source, for a `RegexSet` when `re` is [`Re::Std`].
    pub(crate) source: String,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(pub(crate) String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `/pattern/flags` or `m{pattern}flags` (any delimiter after `m`) at the start of
/// `text` into (pattern, flags, rest after the flags).
pub(crate) fn split_delimited(text: &str) -> Result<(&str, &str, &str), PatternError> {
    let text = text.trim_start();
    let (open, body_start) = if let Some(rest) = text.strip_prefix('m') {
        match rest.chars().next() {
            Some(c) if !c.is_alphanumeric() && !c.is_whitespace() && c != '_' => {
                (c, 1 + c.len_utf8())
            }
            _ => return Err(PatternError("expected /pattern/ or m{pattern}".into())),
        }
    } else if text.starts_with('/') {
        ('/', 1)
    } else {
        return Err(PatternError("expected /pattern/ or m{pattern}".into()));
    };
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        '<' => '>',
        c => c,
    };
    let body = &text[body_start..];
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == close && depth == 0 {
            let after = &body[i + c.len_utf8()..];
            let flags_len = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len());
            return Ok((&body[..i], &after[..flags_len], &after[flags_len..]));
        } else if open != close && c == close {
            depth -= 1;
        } else if open != close && c == open {
            // Perl counts nested bracket pairs inside bracket delimiters.
            depth += 1;
        }
    }
    Err(PatternError(format!("no closing {close:?}")))
}

/// Compiles a Perl pattern with Perl flags.
pub(crate) fn compile(pattern: &str, flags: &str) -> Result<Compiled, PatternError> {
    let mut prefix = String::new();
    let mut extended = false;
    for flag in flags.chars() {
        match flag {
            'i' | 'm' | 's' => prefix.push(flag),
            'x' => extended = true,
            // `g` and `o` change nothing for a yes/no match.
            'g' | 'o' => {}
            other => return Err(PatternError(format!("unsupported flag {other:?}"))),
        }
    }
    let head = if prefix.is_empty() {
        String::new()
    } else {
        format!("(?{prefix})")
    };
    let plain = translate(pattern, extended, false)?;
    if !plain.needs_fancy {
        let source = format!("{head}{}", plain.out);
        match regex::RegexBuilder::new(&source)
            .size_limit(SIZE_LIMIT)
            .build()
        {
            Ok(re) => {
                return Ok(Compiled {
                    re: Re::Std(re),
                    source,
                })
            }
            Err(std_err) => {
                // Some things only the backtracker reads; try it before giving up.
                let fancy = translate(pattern, extended, true)?;
                let source = format!("{head}{}", fancy.out);
                return build_fancy(&source).map_err(|fancy_err| {
                    PatternError(format!(
                        "regex: {}; fancy-regex: {fancy_err}",
                        first_line(&std_err.to_string())
                    ))
                });
            }
        }
    }
    let fancy = translate(pattern, extended, true)?;
    let source = format!("{head}{}", fancy.out);
    build_fancy(&source).map_err(|e| PatternError(format!("fancy-regex: {e}")))
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(s)
        .to_owned()
}

fn build_fancy(source: &str) -> Result<Compiled, String> {
    let re = fancy_regex::RegexBuilder::new(source)
        .backtrack_limit(BACKTRACK_LIMIT)
        .delegate_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| first_line(&e.to_string()))?;
    Ok(Compiled {
        re: Re::Fancy(Box::new(re)),
        source: source.to_owned(),
    })
}

struct Translated {
    out: String,
    needs_fancy: bool,
}

/// Rewrites Perl syntax into the dialect `regex` (and `fancy-regex`) read. With `fancy`
/// set, the ASCII classes are spelled as plain classes, since `fancy-regex` has its own
/// parser in front of `regex`'s.
fn translate(pattern: &str, extended: bool, fancy: bool) -> Result<Translated, PatternError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut needs_fancy = false;
    let mut in_class = false;
    // Position in `out`-independent terms: the index of the first char inside the class.
    let mut class_start = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if in_class {
            match c {
                ']' if i > class_start => {
                    in_class = false;
                    out.push(']');
                }
                ']' => out.push_str("\\]"),
                '[' => {
                    // POSIX classes stay; any other `[` is literal in Perl.
                    if chars.get(i + 1) == Some(&':') {
                        if let Some(end) = find_seq(&chars, i + 2, &[':', ']']) {
                            out.extend(&chars[i..end + 2]);
                            i = end + 2;
                            continue;
                        }
                    }
                    out.push_str("\\[");
                }
                // Set operators in `regex` classes; literals in Perl.
                '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
                '\\' => {
                    i += 1;
                    let Some(&e) = chars.get(i) else {
                        return Err(PatternError("trailing backslash".into()));
                    };
                    match e {
                        'w' => out.push_str("0-9A-Za-z_"),
                        'd' => out.push_str("0-9"),
                        's' => out.push_str("\\t\\n\\x0B\\x0C\\r "),
                        'h' => out.push_str("\\t "),
                        'v' => out.push_str("\\n\\x0B\\x0C\\r"),
                        'b' => out.push_str("\\x08"),
                        'e' => out.push_str("\\x1B"),
                        '0'..='7' => {
                            let (value, used) = octal(&chars, i);
                            out.push_str(&format!("\\x{{{value:X}}}"));
                            i += used;
                            continue;
                        }
                        e if e.is_ascii_alphanumeric() => {
                            out.push('\\');
                            out.push(e);
                        }
                        e => push_literal(&mut out, e),
                    }
                }
                c => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' if extended => {}
            '#' if extended => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                continue;
            }
            '{' => match quantifier(&chars, i) {
                Some((text, end)) => {
                    out.push_str(&text);
                    i = end;
                    if chars.get(i) == Some(&'+') {
                        needs_fancy = true;
                    }
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' => out.push_str("\\}"),
            '*' | '+' | '?' => {
                out.push(c);
                if chars.get(i + 1) == Some(&'+') {
                    // Possessive: only the backtracker has it.
                    needs_fancy = true;
                    out.push('+');
                    i += 1;
                }
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    let next = chars.get(i + 2).copied();
                    let next2 = chars.get(i + 3).copied();
                    match (next, next2) {
                        (Some('#'), _) => {
                            // A comment group: drop it.
                            while i < chars.len() && chars[i] != ')' {
                                i += 1;
                            }
                            i += 1;
                            continue;
                        }
                        (Some('=' | '!' | '>'), _) | (Some('<'), Some('=' | '!')) => {
                            needs_fancy = true;
                        }
                        (Some('P'), Some('=' | '>')) => needs_fancy = true,
                        (Some('|'), _) => {
                            return Err(PatternError("branch reset (?|…) is not supported".into()))
                        }
                        _ => {}
                    }
                }
                out.push('(');
            }
            '\\' => {
                i += 1;
                let Some(&e) = chars.get(i) else {
                    return Err(PatternError("trailing backslash".into()));
                };
                match e {
                    'Q' => {
                        i += 1;
                        let end = find_seq(&chars, i, &['\\', 'E']).unwrap_or(chars.len());
                        let literal: String = chars[i..end].iter().collect();
                        out.push_str(&regex::escape(&literal));
                        i = (end + 2).min(chars.len().max(end));
                        continue;
                    }
                    'E' => {}
                    'w' => out.push_str(if fancy { "[0-9A-Za-z_]" } else { "(?-u:\\w)" }),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    's' => out.push_str("[\\t\\n\\x0B\\x0C\\r ]"),
                    'S' => out.push_str("[^\\t\\n\\x0B\\x0C\\r ]"),
                    'h' => out.push_str("[\\t ]"),
                    'H' => out.push_str("[^\\t ]"),
                    'v' => out.push_str("[\\n\\x0B\\x0C\\r]"),
                    'V' => out.push_str("[^\\n\\x0B\\x0C\\r]"),
                    'R' => out.push_str("(?:\\r\\n|[\\n\\x0B\\x0C\\r])"),
                    'b' => out.push_str(if fancy { "\\b" } else { "(?-u:\\b)" }),
                    'B' => out.push_str(if fancy { "\\B" } else { "(?-u:\\B)" }),
                    // "End, or before a final newline": as a consuming match it still
                    // answers yes/no correctly.
                    'Z' => out.push_str("(?:\\n?\\z)"),
                    'e' => out.push_str("\\x1B"),
                    '1'..='9' => {
                        needs_fancy = true;
                        out.push('\\');
                        out.push(e);
                    }
                    '0' => {
                        let (value, used) = octal(&chars, i);
                        out.push_str(&format!("\\x{{{value:X}}}"));
                        i += used;
                        continue;
                    }
                    'K' | 'G' => {
                        needs_fancy = true;
                        out.push('\\');
                        out.push(e);
                    }
                    e if e.is_ascii_alphanumeric() => {
                        out.push('\\');
                        out.push(e);
                    }
                    // Any escaped punctuation is itself in Perl (`\/`, `\<`, `\@`).
                    e => push_literal(&mut out, e),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    if in_class {
        return Err(PatternError("unterminated character class".into()));
    }
    Ok(Translated { out, needs_fancy })
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// Up to three octal digits from `at`: (value, digits used).
fn octal(chars: &[char], at: usize) -> (u32, usize) {
    let mut value = 0u32;
    let mut used = 0usize;
    while used < 3 {
        match chars.get(at + used).and_then(|c| c.to_digit(8)) {
            Some(d) => {
                value = value * 8 + d;
                used += 1;
            }
            None => break,
        }
    }
    (value, used)
}

fn find_seq(chars: &[char], from: usize, seq: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&i| chars[i..].starts_with(seq))
}

/// A Perl quantifier `{n}`, `{n,}`, `{n,m}` or `{,m}` at `at`: its `regex` spelling and
/// the index after it. Anything else is a literal `{` in Perl.
fn quantifier(chars: &[char], at: usize) -> Option<(String, usize)> {
    let close = (at + 1..chars.len()).find(|&i| chars[i] == '}')?;
    let inner: String = chars[at + 1..close].iter().collect();
    let (min, max) = match inner.split_once(',') {
        Some((min, max)) => (min.trim(), Some(max.trim())),
        None => (inner.trim(), None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let text = match max {
        None if digits(min) => format!("{{{min}}}"),
        Some("") if digits(min) => format!("{{{min},}}"),
        Some(max) if digits(max) && (min.is_empty() || digits(min)) => {
            let min = if min.is_empty() { "0" } else { min };
            format!("{{{min},{max}}}")
        }
        _ => return None,
    };
    Some((text, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, flags: &str, text: &str) -> bool {
        compile(pattern, flags)
            .map(|c| c.re.is_match(text))
            .unwrap_or(false)
    }

    #[test]
    fn delimiters_split() {
        assert_eq!(
            split_delimited("/a\\/b/i rest").ok(),
            Some(("a\\/b", "i", " rest"))
        );
        assert_eq!(split_delimited("m{a{2}b}s").ok(), Some(("a{2}b", "s", "")));
        assert_eq!(split_delimited("m!x!").ok(), Some(("x", "", "")));
        assert!(split_delimited("foo").is_err());
    }

    #[test]
    fn perl_quirks_translate() {
        assert!(matches("a{", "", "a{"));
        assert!(matches("\\<b\\>", "", "<b>"));
        assert!(matches("[[x]", "", "["));
        assert!(matches("\\Qa.b\\E", "", "a.b"));
        assert!(!matches("\\Qa.b\\E", "", "axb"));
        assert!(matches("a\\Z", "", "a\n"));
        assert!(matches("x{,2}y", "", "xxy"));
        assert!(matches("(\\w)\\1", "", "book"));
        assert!(matches("foo(?!bar)", "", "foobaz"));
        assert!(!matches("foo(?!bar)", "", "foobar"));
        assert!(matches("f o o # comment", "x", "foo"));
        assert!(matches("a(?#note)b", "", "ab"));
        assert!(matches("\\bcafe\\b", "", "un cafe noir"));
    }
}
