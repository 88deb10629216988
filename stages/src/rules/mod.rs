//! A SpamAssassin-compatible rule engine: loads `.cf` files and checks raw messages.
//!
//! ```no_run
//! # use std::path::PathBuf;
//! use pampa_stages::rules::RuleSet;
//! let (rules, report) = RuleSet::load(&[PathBuf::from("stages/rules")])?;
//! for item in &report.unsupported {
//!     eprintln!("{}:{}: {:?} {}", item.file.display(), item.line, item.rule, item.why);
//! }
//! let hits = rules.check(b"Subject: hi\r\n\r\nbody\r\n");
//! let score: f64 = hits.iter().map(|h| h.score).sum();
//! # let _ = score;
//! # Ok::<(), pampa_stages::rules::RulesError>(())
//! ```
//!
//! # What is supported
//! - Rule types `header` (`:raw`, `:addr`, `:name`, `ALL`, `exists:NAME`, `=~`, `!~`, with
//!   or without spaces around the operator, `[if-unset: …]`, the pseudo-headers `ToCc`,
//!   `MESSAGEID`, `EnvelopeFrom`), `body`, `rawbody`, `full`, `uri`, `mimeheader` (the
//!   MIMEHeader plugin: a header of any MIME part, decoded or `:raw`) and `meta` (`&& ||
//!   !`, `+ - * /`, comparisons, parentheses).
//! - `score` (single and four-score forms: the first, no-Bayes no-network column is used),
//!   `describe`, `tflags` (stored; `nice` makes the default score −1 as in SpamAssassin),
//!   `if`/`ifplugin`/`else`/`endif`, `include`, comments and `\#`.
//! - The ReplaceTags plugin: `replace_tag`, `replace_pre`, `replace_inter`,
//!   `replace_post` and `replace_rules` fill `<TAG>` markers as SpamAssassin does
//!   (`replace.rs`).
//! - Default scores follow SpamAssassin: 1.0, or −1.0 with `tflags nice`; `__` sub-rules
//!   and `T_` test rules score nothing (SpamAssassin gives `T_` 0.01).
//! - A few `eval:` functions natively, the weighty ones that need no network (the list
//!   and why: `eval.rs`).
//! - Settings that configure features pampa does not have and define no rule (Bayes,
//!   reports, registry boundaries, welcomelist entries, DNS options…) are accepted and
//!   counted in [`LoadReport::ignored`].
//!
//! # What is reported unsupported (and scores nothing)
//! Unknown directives, other evals, patterns neither `regex` nor `fancy-regex` accept,
//! `X-Spam-Relays-*` pseudo-headers (no received-header parser), metas that read an
//! unsupported or undefined rule in a way that could make them hit wrongly (`!RULE`,
//! `RULE < 2`), and `if` conditions we cannot evaluate. A meta whose missing rules can
//! only push it towards a hit loads, with them read as 0 as SpamAssassin reads a rule
//! that did not run, and is listed in [`LoadReport::degraded`]. `if can(…)`/`has(…)` are
//! true for the features in `parse::FEATURES`, `version` is 4.0, and `ifplugin` is true
//! only for the plugins in `parse::PLUGINS`; the rules of skipped blocks are counted per
//! condition in [`LoadReport::skipped`].
//!
//! Patterns are matched on decoded text, not bytes: a stock pattern spelling UTF-8 as
//! byte escapes (`[\xc3][\xa9]`, common in ReplaceTags tags) matches nothing through
//! those branches, so such rules can only hit less than in SpamAssassin.
//!
//! # Bounded work per message
//! Only the first 2 MiB of a message are parsed; `body` rules see at most 50 000 bytes of
//! rendered text per part (SpamAssassin's `body_part_scan_size`) and 512 KiB in all,
//! `rawbody` 500 000 bytes per part, and `full` the parsed 2 MiB. Backtracking patterns
//! have a step limit. So a 20 MB message costs a few MiB, not a multiple of its size.

mod eval;
mod expr;
pub(crate) mod message;
mod parse;
mod perlre;
mod prefilter;
mod replace;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
};

use pampa_schemas::Tag;

use self::{
    message::{Modifier, View},
    parse::{Def, DefKind, Parsed},
    perlre::Re,
};

/// Patterns per `RegexSet`: one set over hundreds of patterns makes the lazy DFA's cache
/// thrash, so the set falls back to a slow engine; chunks keep each set fast while a
/// message is still scanned once per chunk rather than once per rule.
const SET_CHUNK: usize = 64;

/// Why rules could not be loaded at all. Problems inside a file are not errors: they are
/// listed in the [`LoadReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A rule file or directory could not be read.
    #[error("cannot read rule file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path (or pattern) named no rule file.
    #[error("no rule files match {0}")]
    NoFiles(PathBuf),
}

/// The kind of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// `header`.
    Header,
    /// `body`: rendered text.
    Body,
    /// `rawbody`: decoded, not rendered.
    Rawbody,
    /// `full`: the whole raw message.
    Full,
    /// `uri`: each link.
    Uri,
    /// `meta`: an expression over other rules.
    Meta,
    /// `mimeheader`: a header of any MIME part.
    MimeHeader,
    /// An `eval:` implemented natively (of any of the types above).
    Eval,
}

/// Why a line or rule was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnsupportedKind {
    /// A directive this engine does not know.
    Directive,
    /// An `eval:` not implemented natively.
    Eval,
    /// A pattern neither regex engine accepts.
    Regex,
    /// A malformed line.
    Syntax,
    /// A meta that depends on a rule that is unsupported, undefined or circular.
    Meta,
    /// An `if` condition that could not be evaluated (its block was skipped).
    Condition,
    /// An `include` that could not be read.
    Include,
    /// A header test on something we do not compute (relay pseudo-headers).
    Header,
}

/// One thing not loaded, with where it was written.
#[derive(Debug, Clone)]
pub struct Unsupported {
    /// The rule it concerns, if any.
    pub rule: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
    /// The category, for summaries.
    pub kind: UnsupportedKind,
    /// Why, in words.
    pub why: String,
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Every file read, includes too.
    pub files: Vec<PathBuf>,
    /// Rules loaded, per kind.
    pub loaded: BTreeMap<RuleKind, usize>,
    /// Everything not loaded.
    pub unsupported: Vec<Unsupported>,
    /// Metas that loaded although some rule they read cannot run: each such rule only
    /// ever pushes its meta towards a hit, so it is read as 0 (the meta may miss where
    /// SpamAssassin hits, never the reverse). `why` names the missing rules.
    pub degraded: Vec<Unsupported>,
    /// Settings accepted without effect (they configure SpamAssassin features pampa
    /// does not have, and define no rule), counted per directive.
    pub ignored: BTreeMap<String, usize>,
    /// Rules written in `if`/`ifplugin` blocks whose condition was false (mostly plugins
    /// pampa does not implement: DNS lists, DKIM, FreeMail…), counted per condition.
    /// A rule that another branch defined after all is not counted.
    pub skipped: BTreeMap<String, usize>,
}

impl LoadReport {
    /// All rules loaded.
    pub fn total(&self) -> usize {
        self.loaded.values().sum()
    }

    /// Unsupported items counted per category.
    pub fn summary(&self) -> BTreeMap<UnsupportedKind, usize> {
        let mut out = BTreeMap::new();
        for item in &self.unsupported {
            *out.entry(item.kind).or_insert(0) += 1;
        }
        out
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} files, {} rules loaded",
            self.files.len(),
            self.total()
        )?;
        for (kind, n) in &self.loaded {
            writeln!(f, "  {kind:?}: {n}")?;
        }
        writeln!(f, "{} unsupported", self.unsupported.len())?;
        for (kind, n) in self.summary() {
            writeln!(f, "  {kind:?}: {n}")?;
        }
        writeln!(
            f,
            "{} metas loaded with missing dependencies read as 0",
            self.degraded.len()
        )?;
        writeln!(
            f,
            "{} rules in blocks whose condition was false",
            self.skipped.values().sum::<usize>()
        )?;
        writeln!(
            f,
            "{} settings accepted and ignored",
            self.ignored.values().sum::<usize>()
        )?;
        Ok(())
    }
}

/// A rule that hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The rule's name.
    pub name: String,
    /// Its score (first column).
    pub score: f64,
    /// Its `describe` text, if any.
    pub describe: Option<String>,
}

impl Hit {
    /// As a tag for the analysis: the description is the evidence, and the score is the
    /// tag's own weight.
    pub fn to_tag(&self) -> Tag {
        Tag {
            name: self.name.clone(),
            evidence: self.describe.clone().unwrap_or_default(),
            weight: Some(self.score),
        }
    }
}

struct Rule {
    name: String,
    score: f64,
    describe: Option<String>,
    tflags: Vec<String>,
}

/// What a header rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum HeaderTarget {
    /// One header (or pseudo-header) with a modifier.
    Named {
        /// The header name as written.
        name: String,
        /// The presentation.
        modifier: Modifier,
    },
    /// `ALL`: every header as `Name: value` lines.
    All {
        /// `ALL:raw`.
        raw: bool,
    },
}

/// Patterns of one rule type, scanned together.
#[derive(Default)]
struct Group {
    /// Rule index per member.
    rules: Vec<usize>,
    /// Members that need some literal text, run only on texts holding it.
    filtered: Option<Filtered>,
    /// Members without a usable literal, scanned together.
    sets: Vec<(regex::RegexSet, Vec<usize>)>,
    /// Members the sets cannot hold (backtracking ones), by member index, each with a
    /// linear-time superset pattern that must match first (see `prefilter`).
    single: Vec<(usize, Re, Option<regex::Regex>)>,
}

/// Patterns gated by the literals they need: one Aho-Corasick pass over a text names
/// the few that can match it, and only those run.
struct Filtered {
    literals: aho_corasick::AhoCorasick,
    /// Per literal, the indices in `members` of the patterns that need it.
    owners: Vec<Vec<usize>>,
    /// Member index and its pattern.
    members: Vec<(usize, regex::Regex)>,
}

impl Filtered {
    fn build(list: Vec<(usize, regex::Regex, Vec<String>)>) -> Option<Filtered> {
        let mut literals: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut members = Vec::with_capacity(list.len());
        for (i, (member, re, needs)) in list.into_iter().enumerate() {
            for lit in needs {
                match literals.iter().position(|l| *l == lit) {
                    Some(at) => owners[at].push(i),
                    None => {
                        literals.push(lit);
                        owners.push(vec![i]);
                    }
                }
            }
            members.push((member, re));
        }
        let literals = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::Standard)
            .build(&literals)
            .ok()?;
        Some(Filtered {
            literals,
            owners,
            members,
        })
    }

    fn scan(&self, text: &str, matched: &mut [bool]) {
        if self.members.iter().all(|(m, _)| matched[*m]) {
            return;
        }
        let mut tried: Vec<usize> = Vec::new();
        let mut try_one = |i: usize, matched: &mut [bool]| {
            let (member, re) = &self.members[i];
            if !matched[*member] && !tried.contains(&i) {
                tried.push(i);
                matched[*member] = re.is_match(text);
            }
        };
        if prefilter::folds_to_ascii(text) {
            // The literals cannot be trusted on this text: run everything.
            for i in 0..self.members.len() {
                try_one(i, matched);
            }
            return;
        }
        for found in self.literals.find_overlapping_iter(text) {
            for &i in &self.owners[found.pattern().as_usize()] {
                try_one(i, matched);
            }
        }
    }
}

impl Group {
    fn build(members: Vec<(usize, perlre::Compiled)>) -> Group {
        let mut group = Group::default();
        let mut std: Vec<(usize, String, Re)> = Vec::new();
        let mut filtered = Vec::new();
        for (rule, compiled) in members {
            let member = group.rules.len();
            group.rules.push(rule);
            match compiled.re {
                Re::Std(re) => match prefilter::required_literals(&compiled.source) {
                    Some(needs) => filtered.push((member, re, needs)),
                    None => std.push((member, compiled.source, Re::Std(re))),
                },
                Re::Fancy(_) => {
                    let gate = prefilter::fancy_superset(&compiled.source).and_then(|s| {
                        regex::RegexBuilder::new(&s)
                            .size_limit(8 << 20)
                            .build()
                            .ok()
                    });
                    group.single.push((member, compiled.re, gate));
                }
            }
        }
        if !filtered.is_empty() {
            let fallback: Vec<(usize, String, Re)> = filtered
                .iter()
                .map(|(m, re, _)| (*m, re.as_str().to_owned(), Re::Std(re.clone())))
                .collect();
            group.filtered = Filtered::build(filtered);
            if group.filtered.is_none() {
                // No automaton over these literals: scan the patterns like the others.
                std.extend(fallback);
            }
        }
        for chunk in std.chunks(SET_CHUNK) {
            match regex::RegexSetBuilder::new(chunk.iter().map(|(_, s, _)| s.as_str()))
                .size_limit(64 << 20)
                .dfa_size_limit(64 << 20)
                .build()
            {
                Ok(set) => group
                    .sets
                    .push((set, chunk.iter().map(|(m, _, _)| *m).collect())),
                // Each pattern compiled alone; should the set not, scan them one by one.
                Err(_) => group
                    .single
                    .extend(chunk.iter().map(|(m, _, re)| (*m, re.clone(), None))),
            }
        }
        group
    }

    /// Marks `matched[member]` for each pattern that matches `text`.
    fn scan(&self, text: &str, matched: &mut [bool]) {
        if let Some(filtered) = &self.filtered {
            filtered.scan(text, matched);
        }
        for (set, members) in &self.sets {
            if members.iter().all(|&m| matched[m]) {
                continue;
            }
            for i in set.matches(text).iter() {
                matched[members[i]] = true;
            }
        }
        for (member, re, gate) in &self.single {
            if !matched[*member]
                && gate.as_ref().is_none_or(|g| g.is_match(text))
                && re.is_match(text)
            {
                matched[*member] = true;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

struct HeaderMember {
    rule: usize,
    negate: bool,
    re: Re,
    if_unset: Option<String>,
}

/// A `mimeheader` rule: tested against the header of each MIME part.
struct MimeMember {
    rule: usize,
    name: String,
    raw: bool,
    negate: bool,
    re: Re,
    if_unset: Option<String>,
}

impl MimeMember {
    /// Hits when some part's value matches (or, negated, when none does). A part
    /// without the header offers its `if-unset` text, or "", as in SpamAssassin.
    fn check(&self, view: &View) -> bool {
        let any = view.mime_parts.iter().any(|fields| {
            let value = fields
                .iter()
                .rev()
                .find(|f| f.name.eq_ignore_ascii_case(&self.name))
                .map(|f| {
                    if self.raw {
                        f.raw.as_str()
                    } else {
                        f.decoded.as_str()
                    }
                })
                .or(self.if_unset.as_deref())
                .unwrap_or("");
            self.re.is_match(value)
        });
        any != self.negate
    }
}

struct HeaderGroup {
    target: HeaderTarget,
    group: Group,
    /// Same order as `group.rules`.
    members: Vec<HeaderMember>,
}

/// A loaded rule set. Cheap to share across threads (`Send + Sync`); checking a message
/// takes `&self`.
pub struct RuleSet {
    rules: Vec<Rule>,
    headers: Vec<HeaderGroup>,
    exists: Vec<(usize, String, bool)>,
    body: Group,
    rawbody: Group,
    full: Group,
    uri: Group,
    evals: Vec<(usize, eval::Eval)>,
    mime: Vec<MimeMember>,
    /// In dependency order.
    metas: Vec<(usize, expr::Expr)>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Loads rule files. Each path is a `.cf` file, a directory (its `*.cf` files in name
    /// order, as SpamAssassin reads a directory), or a file pattern with `*` in its last
    /// component (`/usr/share/spamassassin/*.cf`).
    pub fn load(paths: &[PathBuf]) -> Result<(RuleSet, LoadReport), RulesError> {
        Self::load_after(&[], paths)
    }

    /// Loads rule texts first (each as if read from a file of that name; the built-in
    /// default set is one), then rule files, into one set, so meta rules in either can
    /// use the other's rules and a later file can rescore an earlier rule.
    pub fn load_after(
        texts: &[(&Path, &str)],
        paths: &[PathBuf],
    ) -> Result<(RuleSet, LoadReport), RulesError> {
        let mut parsed = Parsed::default();
        for (name, text) in texts {
            parsed.files.push(name.to_path_buf());
            parsed.read_text(text, name, 0);
        }
        for path in paths {
            for file in expand(path)? {
                parsed.read_file(&file, 0)?;
            }
        }
        Ok(compile(parsed))
    }

    /// Loads rules from text, as if read from a file named `name` (includes resolve
    /// against its directory). For tests and tools.
    pub fn from_text(text: &str, name: &Path) -> (RuleSet, LoadReport) {
        let mut parsed = Parsed::default();
        parsed.files.push(name.to_owned());
        parsed.read_text(text, name, 0);
        compile(parsed)
    }

    /// The number of rules loaded.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The score of a loaded rule.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.rules.iter().find(|r| r.name == name).map(|r| r.score)
    }

    /// The `tflags` of a loaded rule.
    pub fn tflags(&self, name: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.tflags.as_slice())
    }

    /// Checks a raw RFC 5322 message. Returns the rules that hit, in load order, leaving
    /// out `__` sub-rules and rules scored 0 (which SpamAssassin disables), except `T_`
    /// rules, which are listed with score 0 so rule writers see them.
    pub fn check(&self, raw_message: &[u8]) -> Vec<Hit> {
        let view = View::parse(raw_message);
        let mut value = vec![0.0f64; self.rules.len()];
        let mut matched = Vec::new();
        for hg in &self.headers {
            let text = view.header_value(&hg.target);
            match text {
                Some(text) => {
                    matched.clear();
                    matched.resize(hg.members.len(), false);
                    hg.group.scan(&text, &mut matched);
                    for (m, member) in hg.members.iter().enumerate() {
                        if matched[m] != member.negate {
                            value[member.rule] = 1.0;
                        }
                    }
                }
                // A missing header reads as "" (or its `if-unset` text), as in Perl.
                None => {
                    for member in &hg.members {
                        let text = member.if_unset.as_deref().unwrap_or("");
                        if member.re.is_match(text) != member.negate {
                            value[member.rule] = 1.0;
                        }
                    }
                }
            }
        }
        for (rule, name, want) in &self.exists {
            if view.has_header(name) == *want {
                value[*rule] = 1.0;
            }
        }
        let mut run = |group: &Group, texts: &mut dyn Iterator<Item = &str>| {
            if group.is_empty() {
                return;
            }
            let mut matched = vec![false; group.rules.len()];
            for text in texts {
                group.scan(text, &mut matched);
                if matched.iter().all(|m| *m) {
                    break;
                }
            }
            for (m, hit) in matched.iter().enumerate() {
                if *hit {
                    value[group.rules[m]] = 1.0;
                }
            }
        };
        run(&self.body, &mut view.body_lines.iter().map(String::as_str));
        run(
            &self.rawbody,
            &mut view.raw_lines.iter().map(String::as_str),
        );
        run(&self.full, &mut std::iter::once(view.full.as_str()));
        run(&self.uri, &mut view.uris.iter().map(String::as_str));
        for (rule, e) in &self.evals {
            if e.check(&view) {
                value[*rule] = 1.0;
            }
        }
        for member in &self.mime {
            if member.check(&view) {
                value[member.rule] = 1.0;
            }
        }
        for (rule, e) in &self.metas {
            let v = e.eval(&|i| value[i]);
            value[*rule] = if v != 0.0 { 1.0 } else { 0.0 };
        }
        self.rules
            .iter()
            .zip(&value)
            .filter(|(r, v)| {
                **v != 0.0
                    && !r.name.starts_with("__")
                    && (r.score != 0.0 || r.name.starts_with("T_"))
            })
            .map(|(r, _)| Hit {
                name: r.name.clone(),
                score: r.score,
                describe: r.describe.clone(),
            })
            .collect()
    }
}

/// The files a load path names.
fn expand(path: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let read_err = |source| RulesError::Read {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (dir, pattern) = if path.is_dir() {
        (path.to_owned(), "*.cf".to_owned())
    } else if name.contains('*') {
        (
            path.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
            name.to_owned(),
        )
    } else {
        return Ok(vec![path.to_owned()]);
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| wildcard(&pattern, n))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RulesError::NoFiles(path.to_owned()));
    }
    Ok(files)
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// What a non-meta definition compiles to.
enum Test {
    Header {
        target: HeaderTarget,
        negate: bool,
        compiled: perlre::Compiled,
        if_unset: Option<String>,
    },
    Exists(String, bool),
    Mime {
        name: String,
        raw: bool,
        negate: bool,
        compiled: perlre::Compiled,
        if_unset: Option<String>,
    },
    Pattern(DefKind, perlre::Compiled),
    Eval(eval::Eval),
}

fn compile(parsed: Parsed) -> (RuleSet, LoadReport) {
    let Parsed {
        defs,
        scores,
        describes,
        tflags,
        mut unsupported,
        files,
        ignored,
        skipped,
        replace,
        ..
    } = parsed;
    let mut report_item = |def: &Def, kind: UnsupportedKind, why: String| {
        unsupported.push(Unsupported {
            rule: Some(def.name.clone()),
            file: def.source.file.as_ref().clone(),
            line: def.source.line,
            kind,
            why,
        });
    };

    // Tests first, so metas can name them.
    let mut tests: Vec<(&Def, Test)> = Vec::new();
    let mut metas: Vec<&Def> = Vec::new();
    for def in &defs {
        if def.kind == DefKind::Meta {
            metas.push(def);
            continue;
        }
        match compile_test(def, &replace) {
            Ok(test) => tests.push((def, test)),
            Err((kind, why)) => report_item(def, kind, why),
        }
    }
    let mut index: HashMap<&str, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, (d, _))| (d.name.as_str(), i))
        .collect();

    // Metas: find each one's dependencies and order them so each is evaluated after
    // what it reads. A meta resting on a rule we cannot run (unsupported, undefined, or
    // only defined under a plugin we lack) loads when that rule only ever pushes it
    // towards a hit: read as 0, as SpamAssassin reads a rule that did not run, it can
    // then only make the meta miss, never hit wrongly. Otherwise (`!RULE`, `RULE < 2`)
    // the meta is reported and disabled.
    let skipped_under: HashMap<&str, &str> = skipped
        .iter()
        .map(|(rule, label)| (rule.as_str(), label.as_str()))
        .collect();
    let mut meta_deps: HashMap<&str, (Vec<String>, Option<expr::Expr>)> = HashMap::new();
    let mut bad: HashMap<&str, String> = HashMap::new();
    for def in &metas {
        // Each distinct name gets its own index, so the polarity check can single out
        // the missing ones.
        let mut names: Vec<String> = Vec::new();
        let parsed = expr::parse(&def.text, &mut |n| {
            let i = names.iter().position(|x| x == n).unwrap_or_else(|| {
                names.push(n.to_owned());
                names.len() - 1
            });
            Ok(expr::Expr::Rule(i))
        });
        match parsed {
            Ok(e) => {
                meta_deps.insert(def.name.as_str(), (names, Some(e)));
            }
            Err(why) => {
                bad.insert(def.name.as_str(), format!("bad expression: {why}"));
                meta_deps.insert(def.name.as_str(), (names, None));
            }
        }
    }
    let by_name: HashMap<&str, &Def> = metas.iter().map(|d| (d.name.as_str(), *d)).collect();
    let defined: HashSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let test_names: HashSet<&str> = index.keys().copied().collect();
    let mut walk = MetaWalk {
        tests: &test_names,
        metas: &by_name,
        deps: &meta_deps,
        defined: &defined,
        skipped: &skipped_under,
        bad,
        state: HashMap::new(),
        stack: Vec::new(),
        order: Vec::new(),
        degraded: Vec::new(),
    };
    for def in &metas {
        walk.visit(def.name.as_str(), 0);
    }
    let MetaWalk {
        bad,
        mut order,
        degraded: degraded_metas,
        ..
    } = walk;
    for def in &metas {
        if let Some(why) = bad.get(def.name.as_str()) {
            report_item(def, UnsupportedKind::Meta, why.clone());
        }
    }
    // `order` may hold a meta that a later visit found to be in a cycle.
    order.retain(|d| !bad.contains_key(d.name.as_str()));
    let degraded: Vec<Unsupported> = degraded_metas
        .into_iter()
        .filter(|(d, _)| !bad.contains_key(d.name.as_str()))
        .map(|(def, why)| Unsupported {
            rule: Some(def.name.clone()),
            file: def.source.file.as_ref().clone(),
            line: def.source.line,
            kind: UnsupportedKind::Meta,
            why,
        })
        .collect();
    for (i, def) in order.iter().enumerate() {
        index.insert(def.name.as_str(), tests.len() + i);
    }

    let make_rule = |def: &Def| {
        let flags = tflags.get(&def.name).cloned().unwrap_or_default();
        let score = if def.name.starts_with("__") || def.name.starts_with("T_") {
            0.0
        } else if let Some(score) = scores.get(&def.name) {
            *score
        } else if flags.iter().any(|f| f == "nice") {
            -1.0
        } else {
            1.0
        };
        Rule {
            name: def.name.clone(),
            score,
            describe: describes.get(&def.name).cloned(),
            tflags: flags,
        }
    };
    let mut rules: Vec<Rule> = Vec::with_capacity(tests.len() + order.len());
    let mut loaded: BTreeMap<RuleKind, usize> = BTreeMap::new();
    let mut header_members: Vec<(HeaderTarget, HeaderMember, perlre::Compiled)> = Vec::new();
    let mut exists = Vec::new();
    let mut pattern_members: HashMap<DefKind, Vec<(usize, perlre::Compiled)>> = HashMap::new();
    let mut evals = Vec::new();
    let mut mime = Vec::new();
    for (i, (def, test)) in tests.into_iter().enumerate() {
        rules.push(make_rule(def));
        let kind = match test {
            Test::Header {
                target,
                negate,
                compiled,
                if_unset,
            } => {
                header_members.push((
                    target,
                    HeaderMember {
                        rule: i,
                        negate,
                        re: compiled.re.clone(),
                        if_unset,
                    },
                    compiled,
                ));
                RuleKind::Header
            }
            Test::Exists(name, want) => {
                exists.push((i, name, want));
                RuleKind::Header
            }
            Test::Mime {
                name,
                raw,
                negate,
                compiled,
                if_unset,
            } => {
                mime.push(MimeMember {
                    rule: i,
                    name,
                    raw,
                    negate,
                    re: compiled.re,
                    if_unset,
                });
                RuleKind::MimeHeader
            }
            Test::Pattern(kind, compiled) => {
                pattern_members.entry(kind).or_default().push((i, compiled));
                rule_kind(kind)
            }
            Test::Eval(e) => {
                evals.push((i, e));
                RuleKind::Eval
            }
        };
        *loaded.entry(kind).or_insert(0) += 1;
    }
    let mut meta_exprs = Vec::new();
    for def in &order {
        let id = rules.len();
        rules.push(make_rule(def));
        // A name not in the index is a dependency the walk found missing and harmless
        // (see `degraded`): it reads as 0.
        let parsed = expr::parse(&def.text, &mut |n| {
            Ok(index
                .get(n)
                .map_or(expr::Expr::Num(0.0), |&i| expr::Expr::Rule(i)))
        });
        if let Ok(e) = parsed {
            meta_exprs.push((id, e));
            *loaded.entry(RuleKind::Meta).or_insert(0) += 1;
        }
    }

    // Header rules grouped by what they read, so each value is built and scanned once.
    let mut by_target: Vec<(HeaderTarget, Vec<(HeaderMember, perlre::Compiled)>)> = Vec::new();
    for (target, member, compiled) in header_members {
        match by_target.iter_mut().find(|(t, _)| *t == target) {
            Some((_, list)) => list.push((member, compiled)),
            None => by_target.push((target, vec![(member, compiled)])),
        }
    }
    let headers = by_target
        .into_iter()
        .map(|(target, list)| {
            let (members, compiled): (Vec<HeaderMember>, Vec<perlre::Compiled>) =
                list.into_iter().unzip();
            let group = Group::build(members.iter().map(|m| m.rule).zip(compiled).collect());
            HeaderGroup {
                target,
                group,
                members,
            }
        })
        .collect();
    let mut take = |kind| Group::build(pattern_members.remove(&kind).unwrap_or_default());
    let set = RuleSet {
        rules,
        headers,
        exists,
        body: take(DefKind::Body),
        rawbody: take(DefKind::Rawbody),
        full: take(DefKind::Full),
        uri: take(DefKind::Uri),
        evals,
        mime,
        metas: meta_exprs,
    };
    // A rule skipped in one branch but defined by another (an `else`, a later file)
    // is not missing.
    let mut skipped_count: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (rule, label) in &skipped {
        if !defined.contains(rule.as_str()) && seen.insert(rule.as_str()) {
            *skipped_count.entry(label.clone()).or_insert(0) += 1;
        }
    }
    let report = LoadReport {
        files,
        loaded,
        unsupported,
        degraded,
        ignored,
        skipped: skipped_count,
    };
    (set, report)
}

/// The depth-first walk that orders metas and decides which ones can run.
struct MetaWalk<'a> {
    /// Tests that compiled.
    tests: &'a HashSet<&'a str>,
    metas: &'a HashMap<&'a str, &'a Def>,
    /// Each meta's distinct names (index `i` is `Expr::Rule(i)`) and its parse.
    deps: &'a HashMap<&'a str, (Vec<String>, Option<expr::Expr>)>,
    /// Every rule defined, loaded or not.
    defined: &'a HashSet<&'a str>,
    /// Rules only defined in blocks whose condition was false, with the condition.
    skipped: &'a HashMap<&'a str, &'a str>,
    bad: HashMap<&'a str, String>,
    /// 1: on the stack, 2: done.
    state: HashMap<&'a str, u8>,
    stack: Vec<&'a str>,
    order: Vec<&'a Def>,
    /// Metas that load with missing dependencies read as 0, and which ones.
    degraded: Vec<(&'a Def, String)>,
}

impl<'a> MetaWalk<'a> {
    fn visit(&mut self, name: &'a str, depth: usize) {
        match self.state.get(name) {
            Some(2) => return,
            Some(_) => {
                // A cycle: every meta on it is disabled, none can be evaluated first.
                let from = self.stack.iter().rposition(|n| *n == name).unwrap_or(0);
                for member in &self.stack[from..] {
                    self.bad
                        .entry(member)
                        .or_insert_with(|| "circular dependency".into());
                }
                return;
            }
            None => {}
        }
        if depth > 500 {
            self.bad
                .entry(name)
                .or_insert_with(|| "dependency chain too deep".into());
            return;
        }
        self.state.insert(name, 1);
        self.stack.push(name);
        let Some((names, parsed)) = self.deps.get(name) else {
            self.stack.pop();
            self.state.insert(name, 2);
            return;
        };
        for dep in names {
            if let Some((dep_name, _)) = self.metas.get_key_value(dep.as_str()) {
                self.visit(dep_name, depth + 1);
            }
        }
        self.stack.pop();
        self.state.insert(name, 2);
        if self.bad.contains_key(name) {
            return;
        }
        let missing: Vec<usize> = (0..names.len())
            .filter(|&i| {
                // Missing: neither a compiled test nor a meta that can run.
                let dep = names[i].as_str();
                let runnable_meta = self.metas.contains_key(dep) && !self.bad.contains_key(dep);
                !self.tests.contains(dep) && !runnable_meta
            })
            .collect();
        let Some(def) = self.metas.get(name).copied() else {
            return;
        };
        if missing.is_empty() {
            self.order.push(def);
            return;
        }
        let why_missing = |i: usize| -> String {
            let dep = names[i].as_str();
            if let Some(why) = self.bad.get(dep) {
                format!("{dep}, which {}", why.trim_start_matches("depends on "))
            } else if self.defined.contains(dep) {
                format!("unsupported rule {dep}")
            } else if let Some(label) = self.skipped.get(dep) {
                format!("rule {dep}, defined only under `{label}`")
            } else {
                format!("undefined rule {dep}")
            }
        };
        let rises = parsed
            .as_ref()
            .is_some_and(|e| e.rises_with(&|i| missing.contains(&i)));
        if rises {
            let list: Vec<String> = missing.iter().map(|&i| why_missing(i)).collect();
            let why = format!("loaded, reading as 0: {}", list.join("; "));
            self.degraded.push((def, why));
            self.order.push(def);
        } else {
            // Name a dependency whose absence could make the meta hit wrongly.
            let culprit = missing
                .iter()
                .copied()
                .find(|&i| !parsed.as_ref().is_some_and(|e| e.rises_with(&|j| j == i)))
                .unwrap_or(missing[0]);
            let why = format!("depends on {}", why_missing(culprit));
            self.bad.insert(name, why);
        }
    }
}

fn rule_kind(kind: DefKind) -> RuleKind {
    match kind {
        DefKind::Header => RuleKind::Header,
        DefKind::Body => RuleKind::Body,
        DefKind::Rawbody => RuleKind::Rawbody,
        DefKind::Full => RuleKind::Full,
        DefKind::Uri => RuleKind::Uri,
        DefKind::Meta => RuleKind::Meta,
        DefKind::MimeHeader => RuleKind::MimeHeader,
    }
}

type CompileError = (UnsupportedKind, String);

/// The pattern of a rule that `replace_rules` names, with its tags filled.
fn fill_tags<'p>(
    def: &Def,
    pattern: &'p str,
    flags: &str,
    replace: &parse::Replace,
) -> std::borrow::Cow<'p, str> {
    if replace.rules.contains(&def.name) && def.kind != DefKind::MimeHeader {
        let has_flags = flags.chars().any(|c| matches!(c, 'i' | 'm' | 's' | 'x'));
        std::borrow::Cow::Owned(replace::fill(pattern, has_flags, replace))
    } else {
        std::borrow::Cow::Borrowed(pattern)
    }
}

fn compile_test(def: &Def, replace: &parse::Replace) -> Result<Test, CompileError> {
    let text = def.text.trim();
    if let Some(call) = text.strip_prefix("eval:") {
        return eval::parse(call)
            .map(Test::Eval)
            .map_err(|why| (UnsupportedKind::Eval, why));
    }
    if !matches!(def.kind, DefKind::Header | DefKind::MimeHeader) {
        let (pattern, flags, rest) =
            perlre::split_delimited(text).map_err(|e| (UnsupportedKind::Syntax, e.to_string()))?;
        if !rest.trim().is_empty() {
            return Err((
                UnsupportedKind::Syntax,
                format!("unexpected {:?} after the pattern", rest.trim()),
            ));
        }
        let pattern = fill_tags(def, pattern, flags, replace);
        let compiled = perlre::compile(&pattern, flags)
            .map_err(|e| (UnsupportedKind::Regex, e.to_string()))?;
        return Ok(Test::Pattern(def.kind, compiled));
    }
    if let Some(name) = text.strip_prefix("exists:") {
        if def.kind == DefKind::MimeHeader {
            return Err((
                UnsupportedKind::Header,
                "mimeheader exists: is not supported".into(),
            ));
        }
        return Ok(Test::Exists(
            name.trim().trim_end_matches(':').to_owned(),
            true,
        ));
    }
    // `header NAME Field:mod =~ /re/flags [if-unset: text]`; SpamAssassin allows no
    // space around the operator.
    let field_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':')))
        .unwrap_or(text.len());
    let (field, rest) = text.split_at(field_len);
    if field.is_empty() {
        return Err((
            UnsupportedKind::Syntax,
            "expected FIELD =~ /pattern/".to_owned(),
        ));
    }
    let rest = rest.trim_start();
    let (negate, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (true, r)
    } else {
        return Err((UnsupportedKind::Syntax, "expected =~ or !~".into()));
    };
    let (pattern, flags, after) =
        perlre::split_delimited(rest).map_err(|e| (UnsupportedKind::Syntax, e.to_string()))?;
    let after = after.trim();
    let if_unset = if after.is_empty() {
        None
    } else if let Some(inner) = after
        .strip_prefix("[if-unset:")
        .and_then(|s| s.strip_suffix(']'))
    {
        Some(inner.trim().to_owned())
    } else {
        return Err((
            UnsupportedKind::Syntax,
            format!("unexpected {after:?} after the pattern"),
        ));
    };
    let (name, modifiers) = match field.split_once(':') {
        Some((n, m)) => (n, m),
        None => (field, ""),
    };
    if name.starts_with("X-Spam-Relays-") || name.starts_with("ALL-") {
        return Err((
            UnsupportedKind::Header,
            format!("pseudo-header {name} needs received-header parsing"),
        ));
    }
    let mut modifier = Modifier::Decoded;
    for m in modifiers.split(':').filter(|m| !m.is_empty()) {
        modifier = match m {
            "raw" => Modifier::Raw,
            "addr" => Modifier::Addr,
            "name" => Modifier::Name,
            other => {
                return Err((
                    UnsupportedKind::Header,
                    format!("header modifier :{other} is not supported"),
                ))
            }
        };
    }
    let target = if name == "ALL" {
        HeaderTarget::All {
            raw: modifier == Modifier::Raw,
        }
    } else {
        HeaderTarget::Named {
            name: name.to_owned(),
            modifier,
        }
    };
    let pattern = fill_tags(def, pattern, flags, replace);
    let compiled =
        perlre::compile(&pattern, flags).map_err(|e| (UnsupportedKind::Regex, e.to_string()))?;
    if def.kind == DefKind::MimeHeader {
        // The MIMEHeader plugin reads a part's value decoded, or `:raw`, nothing else.
        let raw = match modifier {
            Modifier::Decoded => false,
            Modifier::Raw => true,
            other => {
                return Err((
                    UnsupportedKind::Header,
                    format!("mimeheader modifier {other:?} is not supported"),
                ))
            }
        };
        return Ok(Test::Mime {
            name: name.to_owned(),
            raw,
            negate,
            compiled,
            if_unset,
        });
    }
    Ok(Test::Header {
        target,
        negate,
        compiled,
        if_unset,
    })
}
