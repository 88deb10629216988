//! Cheap tests that rule a pattern out before it runs.
//!
//! Most rule patterns cannot match without some literal text: `/\bclick (?:here|below)\b/i`
//! needs `click here` or `click below`. [`required_literals`] derives such a set from the
//! pattern's syntax tree (`regex-syntax`'s HIR, the very tree the `regex` crate compiles), so
//! one Aho-Corasick pass over a text tells which patterns can possibly match it, and only
//! those run. Scanning every line with a `RegexSet` of dozens of case-insensitive
//! patterns instead spends its time building lazy-DFA states for their combinations.
//!
//! For backtracking (`fancy-regex`) patterns, [`fancy_superset`] writes a linear-time
//! pattern that matches wherever the backtracking one can (lookarounds dropped,
//! backreferences replaced by what their group matches); when it does not match, the
//! backtracking engine is not started.
//!
//! Both are only ever supersets: a prefilter can let a text through that the pattern then
//! rejects, never the reverse, so hits are exactly those of running every pattern.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most strings one exact set (a cross product of classes and literals) may hold.
const MAX_EXACT: usize = 64;
/// Most strings a required set may hold (an alternation of phrases).
const MAX_REQUIRED: usize = 256;
/// A class of more (case-folded) characters than this is not spelled out: a pattern whose
/// only literal text is a class like `[A-Z]` gets no prefilter.
const MAX_CLASS: usize = 8;

/// Characters outside ASCII that Unicode case folding (which `(?i)` uses) maps onto ASCII
/// letters: the Kelvin sign (k) and the long s (s). Literals are matched ASCII
/// case-insensitively, so a text holding one of these skips the prefilter.
pub(crate) fn folds_to_ascii(text: &str) -> bool {
    !text.is_ascii() && text.contains(['\u{212A}', '\u{017F}'])
}

/// Lower-cased strings of which every match of the `regex`-syntax `source` contains at
/// least one (compared ASCII case-insensitively, see [`folds_to_ascii`]), or `None` when
/// no useful set is known and the pattern must always run.
pub(crate) fn required_literals(source: &str) -> Option<Vec<String>> {
    let hir = regex_syntax::Parser::new().parse(source).ok()?;
    let info = analyze(&hir);
    best([info.exact, info.required].into_iter().flatten())
}

/// What the literal analysis knows of a sub-pattern.
struct Info {
    /// Every string the sub-pattern can match is one of these (lower-cased).
    exact: Option<Vec<String>>,
    /// Every match contains one of these (lower-cased).
    required: Option<Vec<String>>,
}

impl Info {
    fn exact(set: Vec<String>) -> Info {
        Info {
            exact: Some(set),
            required: None,
        }
    }

    fn unknown() -> Info {
        Info {
            exact: None,
            required: None,
        }
    }
}

/// The case-insensitive form a literal character is compared in.
fn fold(c: char) -> char {
    match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    }
}

fn analyze(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(vec![String::new()]),
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0) {
            Ok(s) => Info::exact(vec![s.chars().map(fold).collect()]),
            Err(_) => Info::unknown(),
        },
        HirKind::Class(class) => class_chars(class).map_or_else(Info::unknown, |chars| {
            Info::exact(chars.into_iter().map(String::from).collect())
        }),
        HirKind::Capture(cap) => analyze(&cap.sub),
        HirKind::Repetition(rep) => {
            let sub = analyze(&rep.sub);
            let exact = match (&sub.exact, rep.min, rep.max) {
                (Some(e), 0, Some(1)) => {
                    let mut e = e.clone();
                    e.push(String::new());
                    dedup(e)
                }
                (Some(e), min @ 1..=4, Some(max)) if max == min => {
                    (0..min).try_fold(vec![String::new()], |out, _| cross(&out, e, MAX_EXACT))
                }
                _ => None,
            };
            // At least one repetition: the sub-pattern's own requirement holds.
            let required = if rep.min >= 1 {
                best([sub.exact, sub.required].into_iter().flatten())
            } else {
                None
            };
            Info { exact, required }
        }
        HirKind::Concat(children) => {
            let mut candidates: Vec<Vec<String>> = Vec::new();
            // The cross product of the exact sets of the current run of children.
            let mut run: Vec<String> = vec![String::new()];
            let mut whole: Option<Vec<String>> = Some(vec![String::new()]);
            for child in children {
                let info = analyze(child);
                match info.exact {
                    Some(e) => {
                        whole = whole.and_then(|w| cross(&w, &e, MAX_EXACT));
                        match cross(&run, &e, MAX_EXACT) {
                            Some(r) => run = r,
                            None => {
                                candidates.push(std::mem::take(&mut run));
                                run = e;
                            }
                        }
                    }
                    None => {
                        whole = None;
                        candidates.push(std::mem::replace(&mut run, vec![String::new()]));
                        candidates.extend(info.required);
                    }
                }
            }
            candidates.push(run);
            Info {
                exact: whole,
                required: best(candidates),
            }
        }
        HirKind::Alternation(children) => {
            let infos: Vec<Info> = children.iter().map(analyze).collect();
            let mut exact: Option<Vec<String>> = Some(Vec::new());
            let mut required: Option<Vec<String>> = Some(Vec::new());
            for info in infos {
                if let (Some(all), Some(e)) = (&mut exact, &info.exact) {
                    all.extend(e.iter().cloned());
                } else {
                    exact = None;
                }
                match (
                    &mut required,
                    best([info.exact, info.required].into_iter().flatten()),
                ) {
                    (Some(all), Some(r)) => all.extend(r),
                    _ => required = None,
                }
            }
            Info {
                exact: exact.and_then(dedup).filter(|e| e.len() <= MAX_EXACT),
                required: required.and_then(dedup).filter(|r| r.len() <= MAX_REQUIRED),
            }
        }
    }
}

/// The folded characters of a small class.
fn class_chars(class: &Class) -> Option<Vec<char>> {
    let mut out: Vec<char> = Vec::new();
    let mut add = |c: char| {
        let c = fold(c);
        if !out.contains(&c) {
            out.push(c);
        }
        out.len() <= MAX_CLASS
    };
    match class {
        Class::Unicode(cls) => {
            for range in cls.ranges() {
                if (range.end() as u32 - range.start() as u32) as usize >= 2 * MAX_CLASS {
                    return None;
                }
                for c in range.start()..=range.end() {
                    if !add(c) {
                        return None;
                    }
                }
            }
        }
        Class::Bytes(cls) => {
            for range in cls.ranges() {
                // A byte class outside ASCII is not a character of the text.
                if !range.end().is_ascii() || range.end() - range.start() >= 2 * MAX_CLASS as u8 {
                    return None;
                }
                for b in range.start()..=range.end() {
                    if !add(char::from(b)) {
                        return None;
                    }
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn cross(a: &[String], b: &[String], max: usize) -> Option<Vec<String>> {
    if a.len() * b.len() > max {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            out.push(format!("{x}{y}"));
        }
    }
    dedup(out)
}

fn dedup(mut set: Vec<String>) -> Option<Vec<String>> {
    set.sort_unstable();
    set.dedup();
    Some(set)
}

/// The most selective of several requirement sets: the one whose least selective string
/// is rarest (see [`rarity`]), then the fewest strings. A set holding "" requires nothing.
fn best(sets: impl IntoIterator<Item = Vec<String>>) -> Option<Vec<String>> {
    sets.into_iter()
        .filter(|s| !s.is_empty() && s.iter().all(|x| !x.is_empty()))
        .max_by_key(|s| {
            let weakest = s.iter().map(|x| rarity(x)).min().unwrap_or(0);
            (weakest, std::cmp::Reverse(s.len()))
        })
}

/// How rarely a literal occurs in mail text, roughly: its length, with the separators that
/// fill every line (space, comma, full stop, hyphen, line ends) counting little, so `$`
/// beats `,` as the literal to look for.
fn rarity(literal: &str) -> u32 {
    literal
        .bytes()
        .map(|b| match b {
            b' ' | b',' | b'.' | b'-' | b'\t' | b'\r' | b'\n' | b'\'' => 1,
            _ => 4,
        })
        .sum()
}

/// A `regex`-syntax pattern that matches wherever the `fancy-regex` pattern `source`
/// can: lookarounds and atomic groups dropped, a backreference replaced by its group's
/// pattern. `None` when the pattern uses anything else that needs backtracking.
pub(crate) fn fancy_superset(source: &str) -> Option<String> {
    use fancy_regex::Expr;
    let tree = Expr::parse_tree(source).ok()?;
    // Groups by number, in the order their parentheses open.
    fn groups<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        if let Expr::Group(child) = e {
            out.push(child);
        }
        for child in e.children_iter() {
            groups(child, out);
        }
    }
    fn relax(e: &Expr, groups: &[&Expr], depth: usize) -> Option<Expr> {
        if depth > 64 {
            return None;
        }
        let relaxed = |c: &Expr| relax(c, groups, depth + 1);
        Some(match e {
            Expr::Empty
            | Expr::Any { .. }
            | Expr::Literal { .. }
            | Expr::Delegate { .. }
            | Expr::Assertion(_) => e.clone(),
            Expr::LookAround(..) | Expr::KeepOut => Expr::Empty,
            Expr::Concat(children) => {
                Expr::Concat(children.iter().map(relaxed).collect::<Option<Vec<_>>>()?)
            }
            Expr::Alt(children) => {
                Expr::Alt(children.iter().map(relaxed).collect::<Option<Vec<_>>>()?)
            }
            Expr::Group(child) => Expr::Group(std::sync::Arc::new(relaxed(child)?)),
            Expr::AtomicGroup(child) => Expr::Concat(vec![relaxed(child)?]),
            Expr::Repeat {
                child,
                lo,
                hi,
                greedy,
            } => Expr::Repeat {
                child: Box::new(relaxed(child)?),
                lo: *lo,
                hi: *hi,
                greedy: *greedy,
            },
            // A case-insensitive backreference matches more than its group's pattern.
            Expr::Backref {
                group,
                casei: false,
            } => Expr::Concat(vec![relaxed(groups.get(group.checked_sub(1)?)?)?]),
            _ => return None,
        })
    }
    let mut all = Vec::new();
    groups(&tree.expr, &mut all);
    let relaxed = relax(&tree.expr, &all, 0)?;
    let mut out = String::new();
    relaxed.to_str(&mut out, 0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(p: &str) -> Option<Vec<String>> {
        required_literals(p)
    }

    #[test]
    fn literals_are_found() {
        assert_eq!(
            req(r"(?i)\bclick (?:here|below)\b"),
            Some(vec!["click below".into(), "click here".into()])
        );
        assert_eq!(
            req(r"(?i)\bv[i1]agra\b"),
            Some(vec!["v1agra".into(), "viagra".into()])
        );
        assert_eq!(req(r"(?:\b[A-Z]{3,}\b[\s!,.]+){8}"), None);
        assert_eq!(req(r"a|\w+"), None);
        assert_eq!(req(r"x?"), None);
        assert_eq!(
            req(r"\d+ (?:million|billion)"),
            Some(vec![" billion".into(), " million".into()])
        );
    }

    #[test]
    fn gated_rules_hit_as_ungated_ones_would() {
        let (rules, report) = crate::rules::RuleSet::from_text(
            "body K1 /click here/i\nbody K2 /\\$\\d+ (?:million|billion)/\n\
             header K3 Subject =~ /(\\w+) \\1/\nheader K4 Subject =~ /(?!x)y/\n",
            std::path::Path::new("t.cf"),
        );
        assert!(report.unsupported.is_empty(), "{report:?}");
        let names = |raw: &str| -> Vec<String> {
            rules
                .check(raw.as_bytes())
                .into_iter()
                .map(|h| h.name)
                .collect()
        };
        // The Kelvin sign folds to `k` under `(?i)`: the ASCII literal prefilter steps
        // aside rather than miss it.
        assert_eq!(
            names(
                "Subject: yes yes\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                 CLIC\u{212A} HERE for $5 billion\r\n"
            ),
            ["K1", "K2", "K3", "K4"]
        );
        assert!(names("Subject: no\r\n\r\nclick her, 5 billion\r\n").is_empty());
    }

    #[test]
    fn supersets_of_backtracking_patterns() {
        let s = fancy_superset(r"(\w+) \1(?=x)").unwrap();
        let re = regex::Regex::new(&s).unwrap();
        assert!(re.is_match("ab ab"));
        assert!(fancy_superset(r"(?i)(a)\1").is_none());
    }
}
