//! Reading `.cf` files into rule definitions and settings, line by line as SpamAssassin's
//! `Conf::Parser` does:
//!
//! - `#` starts a comment unless escaped as `\#`, which becomes `#`;
//! - leading and trailing whitespace is dropped, and blank lines skipped;
//! - there are **no continuation lines**: SpamAssassin's format is one setting per line
//!   (its docs reserve leading whitespace for a future multi-line syntax), so a line that
//!   ends in `\` is not joined to the next one, and an indented line is its own setting;
//! - `lang xx …` lines apply only when `xx` is a prefix of `en_US` (we run in English);
//! - each file keeps its own `if` stack, as SpamAssassin resets it at each file's end;
//! - rules written inside a block whose condition is false are counted per condition
//!   (`Parsed::skipped`), so a plugin we lack never hides rules silently;
//! - settings that configure SpamAssassin features this engine does not have, and define
//!   no rule, are accepted and counted (`Parsed::ignored`); a rule that would use them (a
//!   welcomelist eval, say) is still reported on its own.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{expr, RulesError, Unsupported, UnsupportedKind};

/// How deep `include` may nest: deeper is a loop or a mistake.
const MAX_INCLUDE_DEPTH: usize = 16;

/// The plugins whose `ifplugin` blocks are read: the eval plugins this engine implements
/// some functions of (an eval inside that we lack is still reported one by one),
/// `ReplaceTags` (template tags in patterns) and `MIMEHeader` (the `mimeheader` rule
/// type). Every other plugin counts as not loaded, so its block is skipped (its `else`
/// branch read), as SpamAssassin does when a plugin is absent.
pub(crate) const PLUGINS: [&str; 6] = [
    "Mail::SpamAssassin::Plugin::HeaderEval",
    "Mail::SpamAssassin::Plugin::BodyEval",
    "Mail::SpamAssassin::Plugin::MIMEEval",
    "Mail::SpamAssassin::Plugin::HTMLEval",
    "Mail::SpamAssassin::Plugin::ReplaceTags",
    "Mail::SpamAssassin::Plugin::MIMEHeader",
];

/// What `if can(…)` answers true for: SpamAssassin 4.0 feature flags whose behaviour
/// this engine has. `feature_bug6558_free` and `perl_min_version_5010000` only vouch
/// for the parser and the regex dialect (5.10 syntax goes to fancy-regex);
/// `feature_welcomelist_blocklist` picks the 4.0 spelling of eval names, which are
/// reported either way; `has_check_body_length` is `check_body_length`, implemented in
/// `eval.rs`. Capture rules (`feature_capture_rules`) and DNS features are not here.
pub(crate) const FEATURES: [&str; 6] = [
    "Mail::SpamAssassin::Conf::feature_bug6558_free",
    "Mail::SpamAssassin::Conf::perl_min_version_5010000",
    "Mail::SpamAssassin::Conf::feature_welcomelist_blocklist",
    "Mail::SpamAssassin::Conf::feature_blocklist_welcomelist",
    "Mail::SpamAssassin::Conf::feature_header_match_many",
    "Mail::SpamAssassin::Plugin::BodyEval::has_check_body_length",
];

/// Settings accepted and ignored because they change nothing for us, or configure a
/// SpamAssassin feature this engine does not have while defining no rule themselves.
/// Rules that would consult them (welcomelist evals, Bayes, DNS tests) are reported
/// when they are defined, so nothing that scores is dropped here without a word.
const IGNORED: &[&str] = &[
    // SpamAssassin's own run order, plugin loading and versions.
    "priority",
    "loadplugin",
    "tryplugin",
    "require_version",
    "version_tag",
    "test",
    "reuse",
    "file",
    // Reports and added headers: pampa writes its own.
    "report",
    "unsafe_report",
    "clear_report_template",
    "clear_unsafe_report_template",
    "report_safe",
    "report_contact",
    "report_charset",
    "add_header",
    "remove_header",
    "clear_headers",
    "rewrite_header",
    "required_score",
    "ok_locales",
    "ok_languages",
    // Registry boundaries and URI redirectors: we take hosts as they are written.
    "util_rb_tld",
    "util_rb_2tld",
    "util_rb_3tld",
    "clear_util_rb",
    "redirector_pattern",
    // Bayes: pampa has its own classifier.
    "bayes_ignore_header",
    "bayes_auto_learn",
    "bayes_stopword_de",
    "bayes_stopword_en",
    "bayes_stopword_es",
    "bayes_stopword_fr",
    "bayes_stopword_it",
    "bayes_stopword_nl",
    "bayes_stopword_no",
    "bayes_stopword_pl",
    "bayes_stopword_pt",
    "bayes_stopword_ru",
    "bayes_stopword_se",
    "bayes_stopword_tr",
    // Welcome/block lists: pampa keeps them in SQL (the whitelist stage).
    "def_whitelist_auth",
    "def_welcomelist_auth",
    "def_whitelist_from_dkim",
    "def_welcomelist_from_dkim",
    "def_whitelist_from_spf",
    "def_welcomelist_from_spf",
    "whitelist_from",
    "welcomelist_from",
    "blacklist_from",
    "blocklist_from",
    "unwhitelist_from",
    "unwelcomelist_from",
    "enlist_uri_host",
    "enlist_addrlist",
    "adsp_override",
    // Network and trust settings of plugins we do not load.
    "trusted_networks",
    "internal_networks",
    "msa_networks",
    "clear_trusted_networks",
    "clear_internal_networks",
    "originating_ip_headers",
    "clear_originating_ip_headers",
    "dns_local_ports_avoid",
    "uridnsbl_skip_domain",
    "url_shortener",
    "url_shortener_get",
    "freemail_domains",
    "freemail_whitelist",
    "freemail_welcomelist",
    "fns_ignore_headers",
    "fns_ignore_dkim",
    "fns_check",
];

/// Where something was written.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) file: Arc<PathBuf>,
    pub(crate) line: usize,
}

/// The rule types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DefKind {
    Header,
    Body,
    Rawbody,
    Full,
    Uri,
    Meta,
    /// `mimeheader`: a header of any MIME part (the MIMEHeader plugin's rule type).
    MimeHeader,
}

/// The ReplaceTags plugin's settings: `replace_tag NAME PATTERN` (and `_pre`, `_inter`,
/// `_post`), and the rules (`replace_rules`) whose patterns have `<NAME>` tags to fill.
#[derive(Debug, Default)]
pub(crate) struct Replace {
    pub(crate) tags: HashMap<String, String>,
    pub(crate) pre: HashMap<String, String>,
    pub(crate) inter: HashMap<String, String>,
    pub(crate) post: HashMap<String, String>,
    pub(crate) rules: HashSet<String>,
}

/// One rule as written.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    pub(crate) name: String,
    pub(crate) kind: DefKind,
    pub(crate) text: String,
    pub(crate) source: Source,
}

/// Everything the files said.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Definitions in order; a later definition of a name replaces the earlier one.
    pub(crate) defs: Vec<Def>,
    index: HashMap<String, usize>,
    pub(crate) scores: HashMap<String, f64>,
    pub(crate) describes: HashMap<String, String>,
    pub(crate) tflags: HashMap<String, Vec<String>>,
    pub(crate) unsupported: Vec<Unsupported>,
    pub(crate) files: Vec<PathBuf>,
    /// Settings accepted without effect, counted per directive.
    pub(crate) ignored: BTreeMap<String, usize>,
    /// Rules written in blocks whose condition was false: (rule, the condition).
    pub(crate) skipped: Vec<(String, String)>,
    pub(crate) replace: Replace,
}

impl Parsed {
    fn define(&mut self, def: Def) {
        match self.index.get(&def.name) {
            Some(&i) => self.defs[i] = def,
            None => {
                self.index.insert(def.name.clone(), self.defs.len());
                self.defs.push(def);
            }
        }
    }

    fn unsupported(
        &mut self,
        source: &Source,
        rule: Option<&str>,
        kind: UnsupportedKind,
        why: String,
    ) {
        self.unsupported.push(Unsupported {
            rule: rule.map(str::to_owned),
            file: source.file.as_ref().clone(),
            line: source.line,
            kind,
            why,
        });
    }

    /// Reads one file (and what it includes).
    pub(crate) fn read_file(&mut self, path: &Path, depth: usize) -> Result<(), RulesError> {
        let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.files.push(path.to_owned());
        // Rule files are ASCII in practice; comments in Latin-1 must not stop a load.
        let text = String::from_utf8_lossy(&bytes);
        self.read_text(&text, path, depth);
        Ok(())
    }

    /// Reads the text of one file.
    pub(crate) fn read_text(&mut self, text: &str, path: &Path, depth: usize) {
        let file = Arc::new(path.to_owned());
        // (condition was true, block is being read) per open `if`.
        let mut stack: Vec<Frame> = Vec::new();
        for (n, raw_line) in text.split('\n').enumerate() {
            let source = Source {
                file: file.clone(),
                line: n + 1,
            };
            let Some(line) = clean(raw_line) else {
                continue;
            };
            let mut line = line.as_str();
            if let Some(rest) = line
                .strip_prefix("lang ")
                .or_else(|| line.strip_prefix("lang\t"))
            {
                let rest = rest.trim_start();
                let (code, setting) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                if !"en_US"
                    .to_ascii_lowercase()
                    .starts_with(&code.to_ascii_lowercase())
                {
                    continue;
                }
                line = setting.trim();
            }
            let (key, value) = match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            let key = key.to_ascii_lowercase().replace('-', "_");
            let reading = stack.iter().all(|f| f.reading);
            match key.as_str() {
                "ifplugin" | "if" => {
                    let condition = if key == "ifplugin" {
                        Ok(PLUGINS.contains(&value))
                    } else {
                        expr::eval_condition(value, &|p| PLUGINS.contains(&p), &|f| {
                            FEATURES.contains(&f)
                        })
                    };
                    let truth = match condition {
                        Ok(t) => t,
                        Err(why) => {
                            if reading {
                                self.unsupported(
                                    &source,
                                    None,
                                    UnsupportedKind::Condition,
                                    format!("if {value}: {why}; block skipped"),
                                );
                            }
                            false
                        }
                    };
                    stack.push(Frame {
                        reading: truth,
                        label: format!("{key} {value}"),
                    });
                    continue;
                }
                "else" => {
                    match stack.last_mut() {
                        Some(frame) => {
                            frame.reading = !frame.reading;
                            frame.label = format!("else of {}", frame.label);
                        }
                        None => self.unsupported(
                            &source,
                            None,
                            UnsupportedKind::Syntax,
                            "else without if".into(),
                        ),
                    }
                    continue;
                }
                "endif" => {
                    if stack.pop().is_none() {
                        self.unsupported(
                            &source,
                            None,
                            UnsupportedKind::Syntax,
                            "endif without if".into(),
                        );
                    }
                    continue;
                }
                _ => {}
            }
            if !reading {
                // Count the rules the false block would have defined, under the
                // outermost false condition: that is what switched them off.
                if RULE_TYPES.contains(&key.as_str()) {
                    if let Some(frame) = stack.iter().find(|f| !f.reading) {
                        let (name, _) = split_name(value);
                        self.skipped.push((name.to_owned(), frame.label.clone()));
                    }
                }
                continue;
            }
            self.setting(&key, value, &source, depth);
        }
        if !stack.is_empty() {
            let source = Source {
                file,
                line: text.split('\n').count(),
            };
            self.unsupported(
                &source,
                None,
                UnsupportedKind::Syntax,
                "unclosed if at end of file".into(),
            );
        }
    }

    fn setting(&mut self, key: &str, value: &str, source: &Source, depth: usize) {
        let kind = match key {
            "header" => Some(DefKind::Header),
            "body" => Some(DefKind::Body),
            "rawbody" => Some(DefKind::Rawbody),
            "full" => Some(DefKind::Full),
            "uri" => Some(DefKind::Uri),
            "meta" => Some(DefKind::Meta),
            "mimeheader" => Some(DefKind::MimeHeader),
            _ => None,
        };
        if let Some(kind) = kind {
            let (name, text) = split_name(value);
            if name.is_empty() || text.is_empty() {
                self.unsupported(
                    source,
                    None,
                    UnsupportedKind::Syntax,
                    format!("{key} needs a name and a test"),
                );
                return;
            }
            self.define(Def {
                name: name.to_owned(),
                kind,
                text: text.to_owned(),
                source: source.clone(),
            });
            return;
        }
        match key {
            "score" => {
                let (name, text) = split_name(value);
                // The four-score form lists (no Bayes, no net), (net), (Bayes), (Bayes and
                // net). We run neither Bayes nor network tests here, so the first column
                // is the one that fits.
                let first = text
                    .split_whitespace()
                    .next()
                    .map(|s| s.trim_matches(['(', ')']))
                    .and_then(|s| s.parse::<f64>().ok());
                match first {
                    Some(score) if !name.is_empty() => {
                        self.scores.insert(name.to_owned(), score);
                    }
                    _ => self.unsupported(
                        source,
                        Some(name),
                        UnsupportedKind::Syntax,
                        format!("bad score {value:?}"),
                    ),
                }
            }
            "describe" => {
                let (name, text) = split_name(value);
                self.describes.insert(name.to_owned(), text.to_owned());
            }
            "tflags" => {
                let (name, text) = split_name(value);
                self.tflags.insert(
                    name.to_owned(),
                    text.split_whitespace().map(str::to_owned).collect(),
                );
            }
            "include" => {
                let base = source.file.parent().unwrap_or(Path::new("."));
                let path = base.join(value);
                if depth >= MAX_INCLUDE_DEPTH {
                    self.unsupported(
                        source,
                        None,
                        UnsupportedKind::Include,
                        format!("include {value}: nested too deeply"),
                    );
                    return;
                }
                if let Err(e) = self.read_file(&path, depth + 1) {
                    self.unsupported(
                        source,
                        None,
                        UnsupportedKind::Include,
                        format!("include {value}: {e}"),
                    );
                }
            }
            "replace_tag" | "replace_pre" | "replace_inter" | "replace_post" => {
                let (name, text) = split_name(value);
                let map = match key {
                    "replace_tag" => &mut self.replace.tags,
                    "replace_pre" => &mut self.replace.pre,
                    "replace_inter" => &mut self.replace.inter,
                    _ => &mut self.replace.post,
                };
                map.insert(name.to_owned(), text.to_owned());
            }
            "replace_rules" => {
                self.replace
                    .rules
                    .extend(value.split_whitespace().map(str::to_owned));
            }
            // Every stock file keeps the defaults `<` and `>`; other markers would need
            // the tag scanner to take them as parameters.
            "replace_start" | "replace_end" if matches!(value, "<" | ">") => {}
            k if IGNORED.contains(&k) => {
                *self.ignored.entry(k.to_owned()).or_insert(0) += 1;
            }
            k => self.unsupported(
                source,
                None,
                UnsupportedKind::Directive,
                format!("directive {k} is not supported"),
            ),
        }
    }
}

struct Frame {
    reading: bool,
    /// The condition as written, for the skipped-rules summary.
    label: String,
}

/// Directives that define a rule (the ones we read and the network ones we do not).
const RULE_TYPES: [&str; 10] = [
    "header",
    "body",
    "rawbody",
    "full",
    "uri",
    "meta",
    "mimeheader",
    "askdns",
    "urirhssub",
    "urirhsbl",
];

/// Strips a comment (`#` not preceded by `\`), unescapes `\#`, and trims.
fn clean(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            end = i;
            break;
        }
    }
    let kept = line[..end].replace("\\#", "#");
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

fn split_name(value: &str) -> (&str, &str) {
    match value.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (value, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_escapes() {
        assert_eq!(
            clean("  body X /a\\#b/ # note").as_deref(),
            Some("body X /a#b/")
        );
        assert_eq!(clean("# only"), None);
    }

    #[test]
    fn conditionals_nest() {
        let mut parsed = Parsed::default();
        parsed.read_text(
            "ifplugin Mail::SpamAssassin::Plugin::Nope\nbody A /a/\nelse\nbody B /b/\nif version >= 3.0\nbody C /c/\nendif\nendif\n",
            Path::new("t.cf"),
            0,
        );
        let names: Vec<_> = parsed.defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["B", "C"]);
        assert!(parsed.unsupported.is_empty());
    }
}
