//! The SpamAssassin-style `.cf` loader of pampa-stages: parse, `if`/`ifplugin`, ReplaceTags,
//! meta expressions, Perl-regex translation and compilation (`RuleSet::from_text`), then
//! a few fixed messages checked against what loaded, so compiled patterns also run.
//!
//! Inputs that could `include` a file outside the (nonexistent) rule directory are
//! skipped: `include /dev/zero` would read forever, and rule files are the operator's.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pampa_stages::rules::RuleSet;

const MESSAGES: &[&[u8]] = &[
    b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hello there\r\nMessage-ID: <1@example.org>\r\n\r\nJust a note. http://www.example.com/page\r\n",
    b"From: \"WINNER\" <x@lottery.example>\r\nSubject: =?utf-8?B?RlJFRSBNT05FWQ==?=\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfree money now\r\n--b\r\nContent-Type: text/html\r\n\r\n<a href=\"http://1.2.3.4/claim\">CLICK</a>\r\n--b--\r\n",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") && (text.contains('/') || text.contains('\\')) {
        return;
    }
    let (rules, report) = RuleSet::from_text(text, Path::new("/nonexistent-pampa-fuzz/local.cf"));
    let _ = report.total();
    let _ = report.summary();
    for message in MESSAGES {
        for hit in rules.check(message) {
            let _ = hit.to_tag();
        }
    }
});
