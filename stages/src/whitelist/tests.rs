//! The whitelist stage against a real SQLite directory, and against fakes for the cache
//! and for failures.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use pampa_directory::{Address, Directory, DirectoryError, ListKind, ListMatch};
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived};

use super::*;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

/// A directory in a fresh temporary SQLite file, with users alice and bob.
async fn directory() -> (tempfile::TempDir, Directory) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Directory::connect(&format!("sqlite://{}/d.db", tmp.path().display()))
        .await
        .unwrap();
    dir.add_domain("example.org").await.unwrap();
    dir.add_user(ALICE, "pw", "normal").await.unwrap();
    dir.add_user(BOB, "pw", "normal").await.unwrap();
    (tmp, dir)
}

fn analysis(mail_from: &str, recipients: &[&str]) -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: "m1".into(),
        client: ClientInfo {
            ip: "192.0.2.1".into(),
            helo: "client.example".into(),
            tls: false,
        },
        mail_from: mail_from.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        blob: BlobRef {
            key: "m1".into(),
            size: 0,
            sha256: String::new(),
        },
        header_message_id: None,
        received_by: "mx.example.org".into(),
        received_at: Utc::now(),
        levels: Vec::new(),
    })
}

fn body(from: &str) -> Body {
    Body::new(
        format!(
            "Received: from client.example by mx.example.org\r\n\
             From: {from}\r\n\
             To: {ALICE}\r\n\
             Subject: hello\r\n\
             \r\n\
             From: not-a-header@body.example\r\n"
        )
        .into_bytes(),
    )
}

fn no_caching() -> WhitelistConfig {
    WhitelistConfig {
        cache_ttl: Duration::ZERO,
    }
}

/// (recipient, tag name, evidence) of every recipient tag.
async fn run<S: ListSource>(
    stage: &Whitelist<S>,
    mail_from: &str,
    from: &str,
    recipients: &[&str],
) -> Vec<(String, String, String)> {
    let findings = stage
        .process(&analysis(mail_from, recipients), &body(from))
        .await
        .unwrap();
    assert!(
        findings.tags.is_empty(),
        "only recipient tags: {findings:?}"
    );
    findings
        .recipient_tags
        .into_iter()
        .map(|(r, t)| (r, t.name, t.evidence))
        .collect()
}

fn names(tags: &[(String, String, String)]) -> Vec<(&str, &str)> {
    tags.iter()
        .map(|(r, n, _)| (r.as_str(), n.as_str()))
        .collect()
}

#[tokio::test]
async fn exact_domain_and_subdomain_patterns() {
    let (_tmp, dir) = directory().await;
    dir.add_list_entry(Some(ALICE), ListKind::Allow, "friend@example.net")
        .await
        .unwrap();
    dir.add_list_entry(Some(ALICE), ListKind::Block, "spam.example")
        .await
        .unwrap();
    dir.add_list_entry(Some(BOB), ListKind::Block, "*.example.net")
        .await
        .unwrap();
    let stage = Whitelist::new(no_caching(), dir);

    // Exact: only that address.
    let tags = run(
        &stage,
        "friend@example.net",
        "<friend@example.net>",
        &[ALICE],
    )
    .await;
    assert_eq!(names(&tags), [(ALICE, WL_USER)]);
    assert_eq!(
        tags[0].2,
        "friend@example.net matched by envelope sender friend@example.net and From header friend@example.net"
    );
    assert!(run(&stage, "foe@example.net", "foe@example.net", &[ALICE])
        .await
        .is_empty());

    // Domain: that domain only, not its subdomains.
    let tags = run(&stage, "x@spam.example", "x@spam.example", &[ALICE]).await;
    assert_eq!(names(&tags), [(ALICE, BL_USER)]);
    assert!(run(
        &stage,
        "x@mail.spam.example",
        "x@mail.spam.example",
        &[ALICE]
    )
    .await
    .is_empty());

    // Subdomains: the domain itself and any subdomain, but not a look-alike.
    for sender in ["a@example.net", "a@mx.eu.example.net"] {
        let tags = run(&stage, sender, sender, &[BOB]).await;
        assert_eq!(names(&tags), [(BOB, BL_USER)], "{sender}");
        assert!(
            tags[0].2.starts_with(".example.net matched by"),
            "{}",
            tags[0].2
        );
    }
    assert!(run(&stage, "a@badexample.net", "a@badexample.net", &[BOB])
        .await
        .is_empty());
}

#[tokio::test]
async fn each_recipient_gets_its_own_and_the_global_entries() {
    let (_tmp, dir) = directory().await;
    dir.add_list_entry(Some(ALICE), ListKind::Allow, "example.net")
        .await
        .unwrap();
    dir.add_list_entry(None, ListKind::Block, "example.net")
        .await
        .unwrap();
    dir.add_list_entry(None, ListKind::Allow, "news.example.net")
        .await
        .unwrap();
    dir.address_book_add(BOB, "carol@example.net", Some("Carol"))
        .await
        .unwrap();
    let stage = Whitelist::new(no_caching(), dir);

    let tags = run(
        &stage,
        "carol@example.net",
        "carol@example.net",
        &[ALICE, BOB],
    )
    .await;
    assert_eq!(
        names(&tags),
        [
            (ALICE, BL_GLOBAL),
            (ALICE, WL_USER),
            (BOB, BL_GLOBAL),
            (BOB, WL_ADDRESS_BOOK)
        ]
    );
    let tags = run(&stage, "", "x@news.example.net", &[ALICE]).await;
    assert_eq!(names(&tags), [(ALICE, WL_GLOBAL)]);
    assert_eq!(
        tags[0].2,
        "news.example.net matched by From header x@news.example.net"
    );
}

#[tokio::test]
async fn case_does_not_matter() {
    let (_tmp, dir) = directory().await;
    dir.add_list_entry(Some(ALICE), ListKind::Allow, "Friend@Example.NET")
        .await
        .unwrap();
    dir.add_list_entry(Some(ALICE), ListKind::Block, "*.SPAM.example")
        .await
        .unwrap();
    let stage = Whitelist::new(no_caching(), dir);
    let tags = run(&stage, "FRIEND@example.net", "friend@EXAMPLE.net", &[ALICE]).await;
    assert_eq!(names(&tags), [(ALICE, WL_USER)]);
    let tags = run(
        &stage,
        "x@Mail.Spam.EXAMPLE",
        "y@elsewhere.example",
        &[ALICE],
    )
    .await;
    assert_eq!(names(&tags), [(ALICE, BL_USER)]);
}

#[tokio::test]
async fn the_null_sender_never_matches_but_its_from_header_may() {
    let (_tmp, dir) = directory().await;
    dir.add_list_entry(Some(ALICE), ListKind::Block, "example.net")
        .await
        .unwrap();
    let stage = Whitelist::new(no_caching(), dir);
    // A bounce with a From: that is on no list: nothing.
    assert!(run(&stage, "", "MAILER-DAEMON@mx.example.com", &[ALICE])
        .await
        .is_empty());
    // The empty envelope sender is not "an address of no domain" that a pattern could hit.
    let tags = run(&stage, "", "postmaster@example.net", &[ALICE]).await;
    assert_eq!(
        tags[0].2,
        "example.net matched by From header postmaster@example.net"
    );
}

#[tokio::test]
async fn from_header_and_envelope_are_told_apart() {
    let (_tmp, dir) = directory().await;
    dir.add_list_entry(Some(ALICE), ListKind::Allow, "boss@work.example")
        .await
        .unwrap();
    dir.add_list_entry(Some(ALICE), ListKind::Block, "bounces.example")
        .await
        .unwrap();
    let stage = Whitelist::new(no_caching(), dir);

    // A mailing service: envelope from its bounce domain, From: the real author.
    let tags = run(
        &stage,
        "b-123@bounces.example",
        "\"The Boss\" <boss@work.example>",
        &[ALICE],
    )
    .await;
    assert_eq!(
        tags,
        [
            (
                ALICE.to_owned(),
                BL_USER.to_owned(),
                "bounces.example matched by envelope sender b-123@bounces.example".to_owned()
            ),
            (
                ALICE.to_owned(),
                WL_USER.to_owned(),
                "boss@work.example matched by From header boss@work.example".to_owned()
            ),
        ]
    );
    // Several From: mailboxes, a group, comments: each address counts.
    let tags = run(
        &stage,
        "someone@else.example",
        "Someone <someone@else.example>, team: Boss (the boss) <Boss@Work.Example>;",
        &[ALICE],
    )
    .await;
    assert_eq!(names(&tags), [(ALICE, WL_USER)]);
    assert_eq!(
        tags[0].2,
        "boss@work.example matched by From header boss@work.example"
    );
}

#[tokio::test]
async fn several_patterns_of_one_kind_make_one_tag() {
    let (_tmp, dir) = directory().await;
    for pattern in ["bob@example.net", "example.net", ".example.net"] {
        dir.add_list_entry(Some(ALICE), ListKind::Allow, pattern)
            .await
            .unwrap();
    }
    let stage = Whitelist::new(no_caching(), dir);
    let tags = run(&stage, "bob@example.net", "", &[ALICE]).await;
    assert_eq!(names(&tags), [(ALICE, WL_USER)]);
    assert_eq!(
        tags[0].2,
        ".example.net matched by envelope sender bob@example.net; \
         bob@example.net matched by envelope sender bob@example.net; \
         example.net matched by envelope sender bob@example.net"
    );
}

#[tokio::test]
async fn no_senders_no_lookups() {
    let source = Counting::default();
    let stage = Whitelist::with_source(WhitelistConfig::default(), source.clone());
    let findings = stage
        .process(
            &analysis("", &[ALICE]),
            &Body::new(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(findings, Findings::default());
    // A body that is not a message at all.
    stage
        .process(&analysis("", &[ALICE]), &Body::new(vec![0xff; 100]))
        .await
        .unwrap();
    assert_eq!(source.calls(), 0);
}

/// Counts lookups and finds nothing.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Counting {
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl ListSource for Counting {
    async fn sender_lists(
        &self,
        _recipient: &str,
        _senders: &[Address],
    ) -> Result<Vec<ListMatch>, DirectoryError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn lookups_are_cached_for_cache_ttl_only() {
    let source = Counting::default();
    let stage = Whitelist::with_source(
        WhitelistConfig {
            cache_ttl: Duration::from_millis(200),
        },
        source.clone(),
    );
    let a = analysis("x@example.net", &[ALICE, BOB]);
    let b = body("x@example.net");
    stage.process(&a, &b).await.unwrap();
    stage.process(&a, &b).await.unwrap();
    assert_eq!(
        source.calls(),
        2,
        "one lookup per recipient, the second message cached"
    );
    stage
        .process(&analysis("y@example.net", &[ALICE]), &body("y@example.net"))
        .await
        .unwrap();
    assert_eq!(source.calls(), 3, "another sender is another lookup");
    tokio::time::sleep(Duration::from_millis(250)).await;
    stage.process(&a, &b).await.unwrap();
    assert_eq!(source.calls(), 5, "expired entries are looked up again");

    let uncached = Counting::default();
    let stage = Whitelist::with_source(no_caching(), uncached.clone());
    stage.process(&a, &b).await.unwrap();
    stage.process(&a, &b).await.unwrap();
    assert_eq!(uncached.calls(), 4);
}

#[tokio::test]
async fn a_cli_change_takes_effect_after_the_ttl() {
    let (_tmp, dir) = directory().await;
    let stage = Whitelist::new(
        WhitelistConfig {
            cache_ttl: Duration::from_millis(100),
        },
        dir.clone(),
    );
    assert!(run(&stage, "x@example.net", "", &[ALICE]).await.is_empty());
    dir.add_list_entry(Some(ALICE), ListKind::Block, "example.net")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tags = run(&stage, "x@example.net", "", &[ALICE]).await;
    assert_eq!(names(&tags), [(ALICE, BL_USER)]);
}

/// Fails like a database that went away.
struct Down;

impl ListSource for Down {
    async fn sender_lists(
        &self,
        _recipient: &str,
        _senders: &[Address],
    ) -> Result<Vec<ListMatch>, DirectoryError> {
        Err(DirectoryError::Unavailable(sqlx::Error::PoolTimedOut))
    }
}

#[tokio::test]
async fn database_errors_are_transient() {
    let stage = Whitelist::with_source(WhitelistConfig::default(), Down);
    let error = stage
        .process(&analysis("x@example.net", &[ALICE]), &body("x@example.net"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StageError::Transient(e) if e.to_string().contains("database unavailable")),
        "{error:?}"
    );
}

#[test]
fn the_config_has_defaults_and_refuses_unknown_keys() {
    let config: WhitelistConfig = toml::from_str("").unwrap();
    assert_eq!(config, WhitelistConfig::default());
    assert_eq!(config.cache_ttl, Duration::from_secs(5));
    let config: WhitelistConfig = toml::from_str("cache_ttl = \"250ms\"").unwrap();
    assert_eq!(config.cache_ttl, Duration::from_millis(250));
    let error = toml::from_str::<WhitelistConfig>("cache_tll = \"1s\"").unwrap_err();
    assert!(error.to_string().contains("cache_tll"), "{error}");
}
