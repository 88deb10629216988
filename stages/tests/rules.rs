//! Fixture tests of the rule engine: each fixture is a small `.cf` file and a raw
//! message written for the test; the test states which rules must hit and which not.

use std::path::{Path, PathBuf};

use pampa_stages::rules::{Hit, LoadReport, RuleKind, RuleSet, UnsupportedKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(name)
}

/// Loads `NAME.cf` and checks `NAME.eml` (its LF line ends turned into CRLF, as ingest
/// stores mail).
fn run(name: &str) -> (RuleSet, LoadReport, Vec<Hit>) {
    let (rules, report) = RuleSet::load(&[fixture(&format!("{name}.cf"))]).expect("loads");
    let raw = std::fs::read(fixture(&format!("{name}.eml"))).expect("fixture message");
    let raw = crlf(&raw);
    let hits = rules.check(&raw);
    (rules, report, hits)
}

fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    for &b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn names(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.name.as_str()).collect()
}

#[track_caller]
fn assert_hits(hits: &[Hit], yes: &[&str], no: &[&str]) {
    let got = names(hits);
    for name in yes {
        assert!(got.contains(name), "{name} should hit; hits: {got:?}");
    }
    for name in no {
        assert!(!got.contains(name), "{name} should not hit; hits: {got:?}");
    }
}

#[track_caller]
fn assert_clean(report: &LoadReport) {
    assert!(
        report.unsupported.is_empty(),
        "unexpected unsupported items: {:#?}",
        report.unsupported
    );
}

#[test]
fn header_rules() {
    let (_, report, hits) = run("header");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::Header), Some(&13));
    assert_hits(
        &hits,
        &[
            "HDR_SUBJ_PILLS",
            "HDR_FROM_ADDR",
            "HDR_FROM_NAME",
            "HDR_SUBJ_RAW",
            "HDR_ALL_MAILER",
            "HDR_HAS_LIST",
            "HDR_NO_DATE",
            "HDR_UNSET",
            "HDR_TOCC",
        ],
        &[
            "HDR_SUBJ_DECODED",
            "HDR_HAS_BULK",
            "HDR_TO_NOT_EXAMPLE",
            "__HDR_SUB",
        ],
    );
    let pills = hits
        .iter()
        .find(|h| h.name == "HDR_SUBJ_PILLS")
        .expect("hit");
    assert_eq!(pills.score, 2.5);
    assert_eq!(pills.describe.as_deref(), Some("Subject offers pills"));
    let tag = pills.to_tag();
    assert_eq!(tag.weight, Some(2.5));
    // No `score` line: SpamAssassin's default of 1.
    let addr = hits
        .iter()
        .find(|h| h.name == "HDR_FROM_ADDR")
        .expect("hit");
    assert_eq!(addr.score, 1.0);
}

#[test]
fn body_rawbody_full_and_uri_rules() {
    let (_, report, hits) = run("body");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::Body), Some(&5));
    assert_eq!(report.loaded.get(&RuleKind::Rawbody), Some(&2));
    assert_eq!(report.loaded.get(&RuleKind::Full), Some(&2));
    assert_eq!(report.loaded.get(&RuleKind::Uri), Some(&4));
    assert_hits(
        &hits,
        &[
            "BODY_QP_DECODED",
            "BODY_HTML_TEXT",
            "BODY_SUBJECT_LINE",
            "BODY_JOINED_LINES",
            "RAW_FONT_TAG",
            "FULL_QP_SOFT",
            "FULL_BOUNDARY",
            "URI_SHORTENER",
            "URI_WWW",
            "URI_MAILTO",
        ],
        &["BODY_NO_TAGS", "RAW_NOT_QP", "URI_NONE"],
    );
}

#[test]
fn meta_rules() {
    let (_, report, hits) = run("meta");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::Meta), Some(&8));
    assert_hits(
        &hits,
        &[
            "META_AND",
            "META_OR",
            "META_NOT",
            "META_SUM",
            "META_ARITH",
            "META_NESTED",
        ],
        &["META_NOT_NO", "META_SUM_NO", "__M_MONEY"],
    );
    let and = hits.iter().find(|h| h.name == "META_AND").expect("hit");
    assert_eq!(and.score, 1.5);
}

#[test]
fn perl_regex_features() {
    let (_, report, hits) = run("perlre");
    assert_clean(&report);
    assert_hits(
        &hits,
        &[
            "RE_CASE",
            "RE_WORD",
            "RE_LOOKAHEAD",
            "RE_LOOKBEHIND",
            "RE_BACKREF",
            "RE_X_FLAG",
            "RE_BRACES",
            "RE_BANG",
            "RE_LITERAL_BR",
            "RE_SLASH",
            "RE_ANGLE",
            "RE_HASH",
            "RE_QUOTEMETA",
        ],
        &["RE_CASE_NO", "RE_WORD_NO"],
    );
}

#[test]
fn include_and_conditionals() {
    let (_, report, hits) = run("include");
    assert_clean(&report);
    assert_eq!(report.files.len(), 2, "the included file is listed");
    assert_hits(
        &hits,
        &[
            "INC_INCLUDED",
            "INC_PLUGIN_ELSE",
            "INC_PLUGIN_KNOWN",
            "INC_VERSION_NEW",
            "INC_CAN_ELSE",
            "INC_NESTED_YES",
        ],
        &[
            "INC_PLUGIN_MISSING",
            "INC_VERSION_OLD",
            "INC_CAN",
            "INC_NESTED_NO",
        ],
    );
    let inc = hits.iter().find(|h| h.name == "INC_INCLUDED").expect("hit");
    assert_eq!(inc.score, 0.7);
}

#[test]
fn comments_escapes_and_lines_as_spamassassin_reads_them() {
    let (rules, report, hits) = run("syntax");
    assert_clean(&report);
    assert_hits(
        &hits,
        &[
            "SYN_HASH",
            "SYN_INDENTED",
            "SYN_NEXT_LINE",
            "SYN_NICE",
            "T_SYN_TEST",
            "SYN_REDEFINED",
        ],
        &["SYN_FOUR", "SYN_ZERO", "SYN_GERMAN"],
    );
    // A trailing backslash joins nothing: the `body` line after it still defines
    // SYN_NEXT_LINE, and the description keeps its backslash.
    let next = hits
        .iter()
        .find(|h| h.name == "SYN_NEXT_LINE")
        .expect("hit");
    assert_eq!(next.describe.as_deref(), Some("Ends in a backslash \\"));
    let hash = hits.iter().find(|h| h.name == "SYN_HASH").expect("hit");
    assert_eq!(hash.describe.as_deref(), Some("Mentions issue #42"));
    // The four-score form: the first column (0) is used, so the rule is disabled.
    assert_eq!(rules.score("SYN_FOUR"), Some(0.0));
    assert_eq!(rules.score("SYN_NICE"), Some(-1.0));
    assert_eq!(rules.tflags("SYN_NICE"), Some(&["nice".to_owned()][..]));
    let test_rule = hits.iter().find(|h| h.name == "T_SYN_TEST").expect("hit");
    assert_eq!(test_rule.score, 0.0);
    assert_eq!(rules.score("SYN_REDEFINED"), Some(2.0));
}

#[test]
fn unsupported_constructs_are_reported_with_file_and_line() {
    let path = fixture("unsupported.cf");
    let (rules, report) = RuleSet::load(std::slice::from_ref(&path)).expect("loads");
    let find = |rule: Option<&str>, line: usize| {
        report
            .unsupported
            .iter()
            .find(|u| u.rule.as_deref() == rule && u.line == line)
            .unwrap_or_else(|| {
                panic!(
                    "no report for {rule:?} at line {line}: {:#?}",
                    report.unsupported
                )
            })
    };
    let rbl = find(Some("UNS_RBL"), 2);
    assert_eq!(rbl.kind, UnsupportedKind::Eval);
    assert_eq!(rbl.file, path);
    assert!(rbl.why.contains("check_rbl"), "{}", rbl.why);
    assert_eq!(find(Some("UNS_BAD_RE"), 3).kind, UnsupportedKind::Regex);
    assert_eq!(find(Some("UNS_BRANCH"), 4).kind, UnsupportedKind::Regex);
    assert_eq!(find(Some("UNS_RELAYS"), 5).kind, UnsupportedKind::Header);
    let dep = find(Some("UNS_META_DEP"), 6);
    assert_eq!(dep.kind, UnsupportedKind::Meta);
    assert!(dep.why.contains("unsupported rule UNS_RBL"), "{}", dep.why);
    assert!(find(Some("UNS_META_UNDEF"), 7)
        .why
        .contains("undefined rule NO_SUCH_RULE"));
    assert!(find(Some("UNS_META_CHAIN"), 8).why.contains("UNS_META_DEP"));
    assert!(find(Some("UNS_CYCLE_A"), 9).why.contains("circular"));
    assert_eq!(find(None, 11).kind, UnsupportedKind::Directive);
    assert_eq!(find(None, 12).kind, UnsupportedKind::Condition);
    assert_eq!(report.unsupported.len(), 11, "{:#?}", report.unsupported);
    // UNS_OK survives, and so does the meta that UNS_RBL could only push towards a hit
    // (it reads as 0, and the report says so); the load did not fail.
    assert_eq!(rules.len(), 2);
    assert_eq!(report.total(), 2);
    assert_eq!(report.degraded.len(), 1);
    assert_eq!(report.degraded[0].rule.as_deref(), Some("UNS_META_PARTIAL"));
    assert!(
        report.degraded[0].why.contains("UNS_RBL"),
        "{}",
        report.degraded[0].why
    );
    let hits = rules.check(b"Subject: x\r\n\r\nall fine\r\n");
    assert_eq!(names(&hits), ["UNS_OK", "UNS_META_PARTIAL"]);
    let summary = report.summary();
    assert_eq!(summary.get(&UnsupportedKind::Meta), Some(&5));
}

#[test]
fn native_evals() {
    let (_, report, hits) = run("evals");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::Eval), Some(&14));
    assert_hits(
        &hits,
        &[
            "EV_MISSING_TO",
            "EV_SUBJ_CAPS",
            "EV_SUBJ_ILLEGAL",
            "EV_HTML",
            "EV_HTML_ONLY",
            "EV_IMAGE_ONLY",
            "EV_TEMPLATE",
            "EV_SHORT_BODY",
            "EV_ONE_FROM",
            "EV_TAG_IMG",
        ],
        &[
            "EV_EMPTY",
            "EV_LONG_BODY_NO",
            "EV_TWO_SUBJ_NO",
            "EV_TAG_SCRIPT_NO",
        ],
    );
}

#[test]
fn a_missing_rule_file_is_an_error() {
    let err = RuleSet::load(&[fixture("no-such-file.cf")]).expect_err("must fail");
    assert!(
        err.to_string().starts_with("cannot read rule file"),
        "{err}"
    );
}

#[test]
fn a_directory_or_pattern_loads_its_cf_files() {
    let (_, by_dir) = RuleSet::load(&[fixture("inc")]).expect("loads");
    assert_eq!(by_dir.total(), 1);
    let (_, by_glob) = RuleSet::load(&[fixture("inc/*.cf")]).expect("loads");
    assert_eq!(by_glob.total(), 1);
}

#[test]
fn a_huge_message_is_checked_within_its_caps() {
    let (rules, _) = RuleSet::load(&[fixture("body.cf")]).expect("loads");
    let mut raw = b"From: a@example.org\r\nSubject: big\r\n\r\nlimited time offer\r\n".to_vec();
    let line = b"filler filler filler filler filler filler filler filler filler\r\n";
    while raw.len() < 20 << 20 {
        raw.extend_from_slice(line);
    }
    let hits = rules.check(&raw);
    assert!(names(&hits).contains(&"BODY_QP_DECODED"));
}

fn default_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

#[test]
fn the_default_rule_set_loads_cleanly_and_catches_obvious_spam() {
    let (rules, report) = RuleSet::load(&[default_rules()]).expect("loads");
    assert_clean(&report);
    assert!(report.total() >= 20, "{report}");
    let spam = crlf(
        b"From: \"Winner Notice\" <notice@lottery-claims.example>\n\
Subject: URGENT: YOU HAVE WON $1,000,000 USD\n\
Date: Mon, 1 Jan 2024 10:00:00 +0000\n\
Message-ID: <x@lottery-claims.example>\n\
MIME-Version: 1.0\n\
Content-Type: text/html\n\
\n\
<html><body><a href=\"http://192.0.2.7/claim.php?id=1\">Click here</a> to claim your prize. \
Act now, this offer expires in 24 hours! 100% guaranteed, risk free.</body></html>\n",
    );
    let hits = rules.check(&spam);
    let total: f64 = hits.iter().map(|h| h.score).sum();
    assert!(total >= 5.0, "spam scored {total}: {:?}", names(&hits));
    for hit in &hits {
        assert!(hit.describe.is_some(), "{} has no describe", hit.name);
    }
    let ham = crlf(
        b"From: Alice Example <alice@example.org>\n\
To: Bob Example <bob@example.net>\n\
Subject: Minutes of Tuesday's meeting\n\
Date: Tue, 2 Jan 2024 09:30:00 +0100\n\
Message-ID: <20240102093000.1234@example.org>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
Hi Bob,\n\nattached are the notes from Tuesday. The next meeting is on the 9th;\n\
see https://wiki.example.org/meetings for the agenda.\n\nAlice\n",
    );
    let hits = rules.check(&ham);
    let total: f64 = hits.iter().map(|h| h.score).sum();
    assert!(total < 1.0, "ham scored {total}: {:?}", names(&hits));
}

#[test]
fn replace_tags_fill_patterns_as_the_plugin_does() {
    let (_, report, hits) = run("replace");
    assert_clean(&report);
    assert_hits(
        &hits,
        &[
            "REP_VIAGRA",
            "REP_NESTED",
            "REP_POST",
            "REP_NO_PRE",
            "REP_NO_FLAGS",
            "REP_SUBJ",
            "REP_NOT_LISTED",
        ],
        &["REP_PRE_NO"],
    );
}

#[test]
fn mimeheader_rules_read_every_part() {
    let (_, report, hits) = run("mimeheader");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::MimeHeader), Some(&6));
    assert_hits(
        &hits,
        &[
            "MH_EXE_NAME",
            "MH_RAW_FOLDED",
            "MH_NO_ZIP",
            "MH_CTE_B64",
            "MH_UNSET",
        ],
        &["MH_ZIP_NO"],
    );
}

#[test]
fn stock_file_constructs_features_ignored_settings_and_skipped_blocks() {
    let (rules, report, hits) = run("stock_syntax");
    assert_hits(
        &hits,
        &[
            "ST_FEATURE_YES",
            "ST_BODY_LEN",
            "ST_FREEMAIL",
            "ST_NOSPACE",
            "ST_EXISTS_COLON",
            "ST_PARTIAL_OK",
        ],
        &["ST_CAPTURE_NO", "ST_RBL", "ST_PARTIAL", "ST_NEG_NO"],
    );
    assert!(rules.score("ST_CAPTURE_NO").is_none());
    // Settings of absent features are accepted and counted, never reported.
    let ignored: Vec<(&str, usize)> = report
        .ignored
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        ignored,
        [
            ("bayes_ignore_header", 1),
            ("def_welcomelist_auth", 1),
            ("report", 1),
            ("util_rb_2tld", 1)
        ]
    );
    // The DNSEval block's two rules are counted as skipped; ST_FREEMAIL is not, since
    // the else branch defined it.
    assert_eq!(
        report
            .skipped
            .get("ifplugin Mail::SpamAssassin::Plugin::DNSEval"),
        Some(&2),
        "{:?}",
        report.skipped
    );
    assert_eq!(
        report.skipped.values().sum::<usize>(),
        3,
        "{:?}",
        report.skipped
    );
    // Metas reading a missing rule negatively are reported, naming why it is missing.
    let why = |rule: &str| {
        report
            .unsupported
            .iter()
            .find(|u| u.rule.as_deref() == Some(rule))
            .map(|u| u.why.clone())
            .unwrap_or_default()
    };
    assert!(
        why("ST_NEG_NO")
            .contains("defined only under `ifplugin Mail::SpamAssassin::Plugin::DNSEval`"),
        "{}",
        why("ST_NEG_NO")
    );
    assert!(
        why("ST_PARTIAL").contains("undefined rule"),
        "{}",
        why("ST_PARTIAL")
    );
    assert_eq!(report.unsupported.len(), 2, "{:#?}", report.unsupported);
    assert_eq!(report.degraded.len(), 1, "{:#?}", report.degraded);
}

/// Where Debian's stock rules live, if the `spamassassin` package is installed
/// (`ops/test.sh` installs it). sa-update would put newer rules under
/// `/var/lib/spamassassin/<version>/`; without network there are none, and the
/// packaged set is what we measure.
const STOCK_DIR: &str = "/usr/share/spamassassin";

/// The stock rule set loads, most of it runs, and what does not is summarised per kind
/// with its top reasons. Floors catch a regression in the loader or the regex
/// translator; `stages/tests/fixtures/rules/STOCK.md` has the numbers.
#[test]
fn debian_stock_rules_load_and_check_quickly() {
    let dir = Path::new(STOCK_DIR);
    let has_cf = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "cf"))
        })
        .unwrap_or(false);
    if !has_cf {
        // ops/test.sh installs the package; a developer machine may not have it.
        eprintln!("skipped: no {STOCK_DIR}/*.cf (Debian's spamassassin package is not installed)");
        return;
    }
    let started = std::time::Instant::now();
    let (rules, report) = RuleSet::load(&[dir.join("*.cf")]).expect("stock rules load");
    let load_time = started.elapsed();
    eprintln!("{report}");
    eprintln!("loaded in {load_time:?}");
    print_top_reasons(&report);

    // Rules with a pattern (header, body, rawbody, full, uri, mimeheader) that were
    // read: how many loaded.
    let pattern_kinds = [
        RuleKind::Header,
        RuleKind::Body,
        RuleKind::Rawbody,
        RuleKind::Full,
        RuleKind::Uri,
        RuleKind::MimeHeader,
    ];
    let loaded_patterns: usize = pattern_kinds
        .iter()
        .map(|k| report.loaded.get(k).copied().unwrap_or(0))
        .sum();
    let failed_patterns = report
        .unsupported
        .iter()
        .filter(|u| {
            matches!(
                u.kind,
                UnsupportedKind::Regex | UnsupportedKind::Syntax | UnsupportedKind::Header
            ) && u.rule.is_some()
        })
        .count();
    let ratio = loaded_patterns as f64 / (loaded_patterns + failed_patterns) as f64;
    eprintln!(
        "pattern rules: {loaded_patterns} loaded, {failed_patterns} not ({:.1}%)",
        ratio * 100.0
    );
    let kind = |k: RuleKind| report.loaded.get(&k).copied().unwrap_or(0);
    let unsupported = report.summary();
    let uns = |k: UnsupportedKind| unsupported.get(&k).copied().unwrap_or(0);
    assert!(report.files.len() >= 55, "{report}");
    assert!(
        ratio > 0.9,
        "only {:.1}% of pattern rules load",
        ratio * 100.0
    );
    assert!(report.total() >= 1900, "{report}");
    assert!(kind(RuleKind::Header) >= 500, "{report}");
    assert!(kind(RuleKind::Body) >= 550, "{report}");
    assert!(kind(RuleKind::Uri) >= 120, "{report}");
    assert!(kind(RuleKind::Meta) >= 600, "{report}");
    assert!(kind(RuleKind::MimeHeader) >= 50, "{report}");
    // Every pattern the translator meets must compile: a regression here is a bug.
    assert_eq!(uns(UnsupportedKind::Regex), 0, "{report}");
    assert_eq!(uns(UnsupportedKind::Syntax), 0, "{report}");
    assert_eq!(uns(UnsupportedKind::Directive), 0, "{report}");
    assert_eq!(uns(UnsupportedKind::Condition), 0, "{report}");
    assert!(report.unsupported.len() <= 450, "{report}");

    // Messages of every shape check without a panic, and fast even in a debug build.
    let messages: [&[u8]; 5] = [
        b"Subject: hello\r\n\r\nhello\r\n",
        b"",
        b"no header at all, just text\n",
        b"From: \"Winner\" <win@lottery.example>\r\nTo: you@example.net\r\n\
Subject: =?utf-8?B?VVJHRU5UOiBZT1UgV09OIQ==?=\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nClick http://192.0.2.7/claim to get your V-I-A-G-R-A \
and $1,000,000 USD now!!!\r\n--b\r\nContent-Type: text/html\r\n\r\n\
<html><body bgcolor=white><font color=white>hidden</font>\
<a href=\"http://bit.ly/x\">click</a><img src=\"cid:1\"></body></html>\r\n--b--\r\n",
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: Minutes\r\n\
Date: Tue, 2 Jan 2024 09:30:00 +0100\r\nMessage-ID: <1@example.org>\r\n\r\n\
Hi Bob, the notes are on the wiki. Alice\r\n",
    ];
    let started = std::time::Instant::now();
    let mut spam_score = 0.0;
    for (i, raw) in messages.iter().enumerate() {
        let hits = rules.check(raw);
        let score: f64 = hits.iter().map(|h| h.score).sum();
        eprintln!("message {i}: {score:.1} {:?}", names(&hits));
        if i == 3 {
            spam_score = score;
        }
    }
    let check_time = started.elapsed();
    eprintln!("checked {} messages in {check_time:?}", messages.len());
    assert!(spam_score > 0.0, "the spam sample hits nothing");
    assert!(
        load_time + check_time < std::time::Duration::from_secs(10),
        "load {load_time:?}, check {check_time:?}"
    );
}

/// Prints each unsupported kind with its most frequent reasons (rule names taken out,
/// so like reasons group), and the conditions that skipped the most rules.
fn print_top_reasons(report: &LoadReport) {
    let mut by_kind: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>> =
        Default::default();
    for item in &report.unsupported {
        let reason = generalise(&item.why);
        *by_kind
            .entry(format!("{:?}", item.kind))
            .or_default()
            .entry(reason)
            .or_default() += 1;
    }
    let degraded = by_kind.entry("Meta (degraded, loaded)".into()).or_default();
    for item in &report.degraded {
        *degraded.entry(generalise(&item.why)).or_default() += 1;
    }
    for (kind, reasons) in &by_kind {
        let total: usize = reasons.values().sum();
        eprintln!("{kind}: {total}");
        let mut reasons: Vec<_> = reasons.iter().collect();
        reasons.sort_by_key(|(why, n)| (std::cmp::Reverse(**n), why.to_string()));
        for (why, n) in reasons.iter().take(8) {
            eprintln!("  {n:5} {why}");
        }
    }
    eprintln!("skipped rules by condition:");
    let mut skipped: Vec<_> = report.skipped.iter().collect();
    skipped.sort_by_key(|(label, n)| (std::cmp::Reverse(**n), label.to_string()));
    for (label, n) in skipped.iter().take(12) {
        eprintln!("  {n:5} {label}");
    }
}

/// A reason with the rule names after "rule" dropped, so reasons group by cause.
fn generalise(why: &str) -> String {
    let mut out = String::new();
    for word in why.split(' ') {
        let name_like = word.len() > 2
            && word
                .trim_end_matches([',', ';'])
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        out.push_str(if name_like { "RULE" } else { word });
        out.push(' ');
    }
    let out = out.trim_end().to_owned();
    // A dependency chain: keep the root cause.
    let head = if out.starts_with("loaded") {
        "loaded, reading as 0 a meta which"
    } else {
        "depends on a meta which"
    };
    match out.rfind("which ") {
        Some(at) => format!("{head} {}", &out[at + 6..]),
        None => out,
    }
}
