use super::*;

#[test]
fn words_are_lowercased_bounded_and_numbers_skipped() {
    let raw = b"Subject: Cheap PILLS now\r\nFrom: \"Best Shop\" <deals@shop.example.com>\r\n\r\n\
        Hello THERE, buy now!!! Only 12345 or $99 at http://www.pills.example.co.uk/buy \
        a of supercalifragilisticexpialidocious \
        QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5eg== \
        write to bob@mail.example.org.\r\n";
    let tokens = tokenize(raw);
    for expected in [
        "hello",
        "there",
        "now!!!",
        "$99",
        "subject:cheap",
        "subject:pills",
        "from:name:best",
        "from:dom:shop.example.com",
        "url:www.pills.example.co.uk",
        "url:dom:example.co.uk",
        "sk:supercal",
        "email:mail.example.org",
    ] {
        assert!(
            tokens.contains(expected),
            "missing {expected} in {tokens:?}"
        );
    }
    for absent in ["12345", "a", "of", "bob@mail.example.org"] {
        assert!(!tokens.contains(absent), "unexpected {absent}");
    }
    assert!(
        !tokens.iter().any(|t| t.starts_with("qujd")),
        "a base64 run is no word"
    );
}

#[test]
fn html_is_rendered_and_link_hosts_found_in_attributes() {
    let raw = b"Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <html><body><p>Click <a href=\"https://track.example.net/x?y\">here</a> \
        for <b>wonderful</b> savings</p></body></html>\r\n";
    let tokens = tokenize(raw);
    for expected in [
        "wonderful",
        "savings",
        "url:track.example.net",
        "url:dom:example.net",
        "ct:text/html",
        "charset:utf-8",
    ] {
        assert!(
            tokens.contains(expected),
            "missing {expected} in {tokens:?}"
        );
    }
    assert!(!tokens.contains("<b>wonderful</b>") && !tokens.contains("href"));
}

#[test]
fn received_headers_and_the_mbox_line_are_ignored() {
    let raw = b"From someone@example.com Mon Jan  1 00:00:00 2002\n\
        Received: from relayhost.example by mx.example with SMTP\n\
        Subject: hello\n\n body words\n";
    let tokens = tokenize(raw);
    assert!(tokens.contains("subject:hello"), "{tokens:?}");
    assert!(!tokens.iter().any(|t| t.contains("relayhost")));
    assert_eq!(strip_mbox_from(b"From x\nA: b\n"), b"A: b\n");
    assert_eq!(strip_mbox_from(b"From: x\n"), b"From: x\n");
}

#[test]
fn text_is_capped_and_odd_bytes_do_not_panic() {
    let mut raw = b"Subject: big\r\n\r\n".to_vec();
    // Words after the cap must not be read.
    while raw.len() < MAX_TEXT_BYTES + 10 {
        raw.extend_from_slice("filler é ".as_bytes());
    }
    raw.extend_from_slice(b" pastthecap\r\n");
    let tokens = tokenize(&raw);
    assert!(tokens.contains("filler"));
    assert!(!tokens.contains("pastthecap"));
    tokenize(&[0xff, 0xfe, b'\n', b'\n', 0x80]);
    tokenize(b"");
    tokenize(b"From ");
    tokenize(b"http://");
    tokenize("www.\u{e9}\u{e9}".as_bytes());
}

#[test]
fn chi_squared_combining_is_symmetric_and_unsure_without_evidence() {
    assert_eq!(chi_squared_combine([]), 0.5);
    let spammy = chi_squared_combine([0.99, 0.98, 0.97, 0.95]);
    let hammy = chi_squared_combine([0.01, 0.02, 0.03, 0.05]);
    assert!(spammy > 0.99, "{spammy}");
    assert!(hammy < 0.01, "{hammy}");
    assert!((spammy + hammy - 1.0).abs() < 1e-9);
    let mixed = chi_squared_combine([0.99, 0.01]);
    assert!((mixed - 0.5).abs() < 1e-9, "{mixed}");
    // Many strong clues: no underflow to NaN or a wrong side.
    let many = chi_squared_combine(std::iter::repeat_n(0.9999, 150));
    assert!(many > 0.999 && many <= 1.0, "{many}");
}

#[test]
fn chi2_q_matches_known_values() {
    // Q(x² | 2) = e^(-x²/2).
    assert!((chi2_q(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
    // Q(4 | 4) = e^-2 (1 + 2).
    assert!((chi2_q(4.0, 4) - 3.0 * (-2.0f64).exp()).abs() < 1e-12);
    assert_eq!(chi2_q(0.0, 10), 1.0);
}

#[test]
fn forget_undoes_train() {
    let raw = b"Subject: refund\r\n\r\nyour refund is waiting\r\n";
    let mut model = Classifier::new();
    model.train(raw, true);
    assert_eq!(model.message_counts(), (0, 1));
    assert_eq!(model.token("refund"), Some(TokenCounts { ham: 0, spam: 1 }));
    model.forget(raw, true);
    model.train(raw, false);
    assert_eq!(model.message_counts(), (1, 0));
    assert_eq!(model.token("refund"), Some(TokenCounts { ham: 1, spam: 0 }));
    model.forget(raw, false);
    assert_eq!(model.token_count(), 0);
}
