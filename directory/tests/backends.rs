//! The directory's behaviour on every backend: SQLite, MariaDB and PostgreSQL.
//! The server tests use the machine's servers with a throwaway database per run
//! (`PAMPA_TEST_MYSQL_URL`, `PAMPA_TEST_POSTGRES_URL`, base URLs without a database).

mod support;

use pampa_directory::{Address, Directory, DirectoryError};

async fn scenario(url: &str) {
    let dir = Directory::connect(url).await.expect("connect");
    // Connecting again must find the schema in place (migrations are idempotent).
    let dir2 = Directory::connect(url).await.expect("reconnect");

    let levels = dir.list_levels().await.unwrap();
    let names: Vec<_> = levels
        .iter()
        .map(|l| (l.name.as_str(), l.cut, l.discard))
        .collect();
    assert_eq!(
        names,
        vec![
            ("strict", Some(3.0), Some(8.0)),
            ("normal", Some(5.0), Some(12.0)),
            ("tolerant", Some(8.0), Some(20.0)),
            ("off", None, None)
        ]
    );

    assert_eq!(dir.add_domain("Example.ORG").await.unwrap(), "example.org");
    assert!(matches!(
        dir.add_domain("example.org").await,
        Err(DirectoryError::Exists(_))
    ));
    assert!(matches!(
        dir.add_domain("bad domain").await,
        Err(DirectoryError::InvalidDomain(_))
    ));
    assert!(dir2.is_local_domain("EXAMPLE.org").await.unwrap());
    assert!(!dir.is_local_domain("example.net").await.unwrap());

    let alice = dir
        .add_user("Alice@example.org", "s3cret", "strict")
        .await
        .unwrap();
    assert_eq!(alice.address, "alice@example.org");
    assert_eq!(alice.level.name, "strict");
    assert!(matches!(
        dir.add_user("alice@example.org", "x", "normal").await,
        Err(DirectoryError::Exists(_))
    ));
    assert!(matches!(
        dir.add_user("bob@example.net", "x", "normal").await,
        Err(DirectoryError::UnknownDomain(_))
    ));
    assert!(matches!(
        dir.add_user("bob@example.org", "x", "paranoid").await,
        Err(DirectoryError::UnknownLevel(..))
    ));
    dir.add_user("bob@example.org", "pw", "off").await.unwrap();

    let found = dir
        .find_user(&Address::parse("ALICE@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.level.cut, Some(3.0));
    assert_eq!(found.mailbox_location, None);
    assert!(dir
        .find_user(&Address::parse("carol@example.org").unwrap())
        .await
        .unwrap()
        .is_none());

    assert!(dir
        .verify_password("alice@example.org", "s3cret")
        .await
        .unwrap());
    assert!(!dir
        .verify_password("alice@example.org", "wrong")
        .await
        .unwrap());
    dir.set_password("alice@example.org", "n3w").await.unwrap();
    assert!(dir
        .verify_password("alice@example.org", "n3w")
        .await
        .unwrap());
    assert!(matches!(
        dir.set_password("nobody@example.org", "x").await,
        Err(DirectoryError::UnknownUser(_))
    ));

    dir.set_level("bob@example.org", "tolerant").await.unwrap();
    dir.set_mailbox_location("bob@example.org", Some("maildir:/srv/mail/bob"))
        .await
        .unwrap();
    let users = dir.list_users(Some("example.org")).await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[1].level.name, "tolerant");
    assert_eq!(
        users[1].mailbox_location.as_deref(),
        Some("maildir:/srv/mail/bob")
    );

    assert!(matches!(
        dir.remove_domain("example.org").await,
        Err(DirectoryError::DomainInUse(_, 2))
    ));
    dir.remove_user("alice@example.org").await.unwrap();
    dir.remove_user("bob@example.org").await.unwrap();
    assert!(matches!(
        dir.remove_user("bob@example.org").await,
        Err(DirectoryError::UnknownUser(_))
    ));
    dir.remove_domain("example.org").await.unwrap();
    assert!(dir.list_domains().await.unwrap().is_empty());
}

on_every_backend!("dir", scenario);

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = Directory::connect("redis://localhost").await.unwrap_err();
    assert!(err.to_string().contains("redis://localhost"), "{err}");
}
