//! Allow and block lists and the address book on every backend: SQLite, MariaDB and
//! PostgreSQL. The server tests use the machine's servers with a throwaway database per
//! run (`PAMPA_TEST_MYSQL_URL`, `PAMPA_TEST_POSTGRES_URL`, base URLs without a database).

mod support;

use pampa_directory::{
    Address, Contact, Directory, DirectoryError, ImportReport, ListKind, ListMatch, ListPattern,
    ListScope,
};

fn addr(text: &str) -> Address {
    Address::parse(text).unwrap()
}

fn found(scope: ListScope, kind: ListKind, pattern: &str) -> ListMatch {
    ListMatch {
        scope,
        kind,
        pattern: ListPattern::parse(pattern).unwrap(),
    }
}

/// The matches, sorted so the comparison does not depend on the backend's row order.
async fn lookup(
    dir: &Directory,
    recipient: &str,
    senders: &[&str],
) -> Vec<(String, String, String)> {
    let senders: Vec<Address> = senders.iter().map(|s| addr(s)).collect();
    let mut out: Vec<_> = dir
        .sender_lists(recipient, &senders)
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            (
                format!("{:?}", m.scope),
                m.kind.to_string(),
                m.pattern.to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn row(scope: ListScope, kind: ListKind, pattern: &str) -> (String, String, String) {
    let m = found(scope, kind, pattern);
    (
        format!("{:?}", m.scope),
        m.kind.to_string(),
        m.pattern.to_string(),
    )
}

async fn scenario(url: &str) {
    use ListKind::{Allow, Block};
    use ListScope::{AddressBook, Global, User};

    let dir = Directory::connect(url).await.expect("connect");
    dir.add_domain("example.org").await.unwrap();
    dir.add_user("alice@example.org", "pw", "normal")
        .await
        .unwrap();
    dir.add_user("bob@example.org", "pw", "normal")
        .await
        .unwrap();

    // Adding normalises, and names what was stored.
    let e = dir
        .add_list_entry(Some("Alice@Example.org"), Allow, "*.Friends.NET")
        .await
        .unwrap();
    assert_eq!(e.owner.as_deref(), Some("alice@example.org"));
    assert_eq!(e.pattern.to_string(), ".friends.net");
    dir.add_list_entry(Some("alice@example.org"), Allow, "Boss@Work.example")
        .await
        .unwrap();
    dir.add_list_entry(Some("alice@example.org"), Block, "spam.example")
        .await
        .unwrap();
    dir.add_list_entry(Some("bob@example.org"), Block, "friends.net")
        .await
        .unwrap();
    let g = dir
        .add_list_entry(None, Block, "*@Evil.example")
        .await
        .unwrap();
    assert_eq!(
        (g.owner, g.pattern.to_string()),
        (None, "evil.example".into())
    );
    dir.add_list_entry(None, Allow, ".partner.example")
        .await
        .unwrap();

    // The same pattern may be on both lists (block wins when deciding), but not twice on one.
    dir.add_list_entry(Some("alice@example.org"), Block, ".friends.net")
        .await
        .unwrap();
    let dup = dir
        .add_list_entry(Some("alice@example.org"), Allow, "*.friends.net")
        .await;
    assert!(
        matches!(dup, Err(DirectoryError::Exists(ref what)) if what.contains(".friends.net")),
        "{dup:?}"
    );
    assert!(matches!(
        dir.add_list_entry(None, Block, "evil.example").await,
        Err(DirectoryError::Exists(_))
    ));

    // Typed errors name the bad value.
    match dir.add_list_entry(None, Allow, "exa mple.net").await {
        Err(DirectoryError::InvalidDomain(v)) => assert_eq!(v, "exa mple.net"),
        other => panic!("{other:?}"),
    }
    match dir.add_list_entry(None, Allow, "a b@example.net").await {
        Err(DirectoryError::InvalidAddress(v)) => assert_eq!(v, "a b@example.net"),
        other => panic!("{other:?}"),
    }
    match dir
        .add_list_entry(Some("nobody@example.org"), Allow, "x.example")
        .await
    {
        Err(DirectoryError::UnknownUser(v)) => assert_eq!(v, "nobody@example.org"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dir.list_entries(Some("nobody@example.org"), None).await,
        Err(DirectoryError::UnknownUser(_))
    ));

    // Listing: a user's entries come with the global ones, marked by `owner`.
    let global = dir.list_entries(None, None).await.unwrap();
    let texts: Vec<_> = global
        .iter()
        .map(|e| (e.kind, e.pattern.to_string(), e.owner.clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (Allow, ".partner.example".to_owned(), None),
            (Block, "evil.example".to_owned(), None)
        ]
    );
    let alice_allow = dir
        .list_entries(Some("alice@example.org"), Some(Allow))
        .await
        .unwrap();
    let texts: Vec<_> = alice_allow
        .iter()
        .map(|e| (e.pattern.to_string(), e.owner.clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (
                ".friends.net".to_owned(),
                Some("alice@example.org".to_owned())
            ),
            (
                "boss@work.example".to_owned(),
                Some("alice@example.org".to_owned())
            ),
            (".partner.example".to_owned(), None),
        ]
    );
    assert_eq!(
        dir.list_entries(Some("alice@example.org"), None)
            .await
            .unwrap()
            .len(),
        6
    );

    // The address book.
    let c = dir
        .address_book_add(
            "alice@example.org",
            "Carol@Example.COM",
            Some("  Carol C. "),
        )
        .await
        .unwrap();
    assert_eq!(
        c,
        Contact::new("carol@example.com", Some("Carol C.".into()))
    );
    assert!(matches!(
        dir.address_book_add("alice@example.org", "carol@example.com", None)
            .await,
        Err(DirectoryError::Exists(_))
    ));
    assert!(matches!(
        dir.address_book_add("alice@example.org", "not an address", None)
            .await,
        Err(DirectoryError::InvalidAddress(v)) if v == "not an address"
    ));
    assert!(matches!(
        dir.address_book_add("nobody@example.org", "x@example.com", None)
            .await,
        Err(DirectoryError::UnknownUser(_))
    ));
    let report = dir
        .address_book_import(
            "alice@example.org",
            &[
                Contact::new("dave@example.com", Some("Dave".into())),
                Contact::new("CAROL@example.com", None),
                Contact::new("erin@example.com", None),
                Contact::new("Dave@Example.com", None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        ImportReport {
            added: 2,
            skipped: 2
        }
    );
    // One bad address and nothing of the import is kept.
    let bad = dir
        .address_book_import(
            "alice@example.org",
            &[
                Contact::new("frank@example.com", None),
                Contact::new("frank at example.com", None),
            ],
        )
        .await;
    assert!(
        matches!(bad, Err(DirectoryError::InvalidAddress(ref v)) if v == "frank at example.com"),
        "{bad:?}"
    );
    let book = dir.address_book_list("alice@example.org").await.unwrap();
    assert_eq!(
        book,
        vec![
            Contact::new("carol@example.com", Some("Carol C.".into())),
            Contact::new("dave@example.com", Some("Dave".into())),
            Contact::new("erin@example.com", None),
        ]
    );
    assert!(dir
        .address_book_list("bob@example.org")
        .await
        .unwrap()
        .is_empty());

    // The stage's lookup: the recipient's own entries, the global ones, the address book.
    assert_eq!(
        lookup(
            &dir,
            "alice@example.org",
            &["x@mail.friends.net", "carol@example.com"]
        )
        .await,
        vec![
            row(AddressBook, Allow, "carol@example.com"),
            row(User, Allow, ".friends.net"),
            row(User, Block, ".friends.net"),
        ]
    );
    assert_eq!(
        lookup(
            &dir,
            "bob@example.org",
            &["x@mail.friends.net", "carol@example.com"]
        )
        .await,
        Vec::<(String, String, String)>::new(),
        "bob's block is of friends.net only, not its subdomains; carol is not in his book"
    );
    assert_eq!(
        lookup(&dir, "bob@example.org", &["x@friends.net"]).await,
        vec![row(User, Block, "friends.net")]
    );
    assert_eq!(
        lookup(
            &dir,
            "alice@example.org",
            &["boss@work.example", "a@evil.example", "b@x.partner.example"]
        )
        .await,
        vec![
            row(Global, Allow, ".partner.example"),
            row(Global, Block, "evil.example"),
            row(User, Allow, "boss@work.example"),
        ]
    );
    assert_eq!(
        lookup(
            &dir,
            "someone-else@example.org",
            &["a@evil.example", "carol@example.com"]
        )
        .await,
        vec![row(Global, Block, "evil.example")],
        "a recipient that is not a user still gets the global entries"
    );
    assert!(lookup(&dir, "alice@example.org", &[]).await.is_empty());

    // Removing.
    assert!(dir
        .remove_list_entry(Some("alice@example.org"), Block, "*.FRIENDS.net")
        .await
        .unwrap());
    assert!(!dir
        .remove_list_entry(Some("alice@example.org"), Block, ".friends.net")
        .await
        .unwrap());
    assert!(dir
        .remove_list_entry(None, Block, "evil.example")
        .await
        .unwrap());
    assert!(matches!(
        dir.remove_list_entry(Some("nobody@example.org"), Block, "x.example")
            .await,
        Err(DirectoryError::UnknownUser(_))
    ));
    assert!(dir
        .address_book_remove("alice@example.org", "ERIN@example.com")
        .await
        .unwrap());
    assert!(!dir
        .address_book_remove("alice@example.org", "erin@example.com")
        .await
        .unwrap());

    // Removing a user removes their lists and book: a new user with the same address
    // starts clean.
    dir.remove_user("alice@example.org").await.unwrap();
    dir.add_user("alice@example.org", "pw", "normal")
        .await
        .unwrap();
    let left = dir
        .list_entries(Some("alice@example.org"), None)
        .await
        .unwrap();
    assert!(left.iter().all(|e| e.owner.is_none()), "{left:?}");
    assert!(dir
        .address_book_list("alice@example.org")
        .await
        .unwrap()
        .is_empty());
}

on_every_backend!("lists", scenario);
