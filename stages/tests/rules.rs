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
    // Only UNS_OK survives, and the load did not fail.
    assert_eq!(rules.len(), 1);
    assert_eq!(report.total(), 1);
    let hits = rules.check(b"Subject: x\r\n\r\nall fine\r\n");
    assert_eq!(names(&hits), ["UNS_OK"]);
    let summary = report.summary();
    assert_eq!(summary.get(&UnsupportedKind::Meta), Some(&5));
}

#[test]
fn native_evals() {
    let (_, report, hits) = run("evals");
    assert_clean(&report);
    assert_eq!(report.loaded.get(&RuleKind::Eval), Some(&8));
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
        ],
        &["EV_EMPTY"],
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

/// Loads Debian's stock rules when the `spamassassin` package is installed, and prints
/// what loaded and why the rest did not.
#[test]
fn debian_stock_rules_load_when_installed() {
    let dir = Path::new("/usr/share/spamassassin");
    let has_cf = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "cf"))
        })
        .unwrap_or(false);
    if !has_cf {
        eprintln!("skipped: no /usr/share/spamassassin/*.cf (Debian's spamassassin package is not installed)");
        return;
    }
    let (rules, report) = RuleSet::load(&[dir.join("*.cf")]).expect("stock rules load");
    eprintln!("{report}");
    let mut evals: std::collections::BTreeMap<&str, usize> = Default::default();
    for item in &report.unsupported {
        if item.kind == UnsupportedKind::Eval {
            *evals.entry(item.why.as_str()).or_default() += 1;
        }
    }
    let mut evals: Vec<_> = evals.into_iter().collect();
    evals.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (why, n) in evals.iter().take(20) {
        eprintln!("  {n:5} {why}");
    }
    assert!(!rules.is_empty());
    // Every message must be checkable with the stock set.
    let _ = rules.check(b"Subject: hello\r\n\r\nhello\r\n");
}

#[test]
fn zz_dump_stock() {
    let (_, report) = RuleSet::load(&[PathBuf::from("/usr/share/spamassassin/*.cf")]).expect("x");
    let mut out = String::new();
    for u in &report.unsupported {
        out.push_str(&format!("{:?}\t{}\t{}:{}\t{}\n", u.kind, u.rule.as_deref().unwrap_or("-"), u.file.file_name().unwrap().to_string_lossy(), u.line, u.why));
    }
    std::fs::write("/tmp/sa_unsupported.tsv", out).unwrap();
}
