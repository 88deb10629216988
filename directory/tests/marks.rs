//! deliver's marks and users' quotas on every backend (SQLite, MariaDB, PostgreSQL).

mod support;

use pampa_directory::{Address, Directory, MarkState};

async fn scenario(url: &str) {
    let dir = Directory::connect(url).await.unwrap();
    dir.add_domain("example.org").await.unwrap();
    dir.add_user("alice@example.org", "pw", "normal")
        .await
        .unwrap();

    // Quota.
    let alice = || Address::parse("alice@example.org").unwrap();
    assert_eq!(
        dir.find_user(&alice()).await.unwrap().unwrap().quota_bytes,
        None
    );
    dir.set_quota("alice@example.org", Some(300 << 20))
        .await
        .unwrap();
    assert_eq!(
        dir.find_user(&alice()).await.unwrap().unwrap().quota_bytes,
        Some(300 << 20)
    );
    dir.set_quota("alice@example.org", None).await.unwrap();
    assert_eq!(
        dir.find_user(&alice()).await.unwrap().unwrap().quota_bytes,
        None
    );
    assert!(dir.set_quota("nobody@example.org", Some(1)).await.is_err());

    // Marks: created, moved on, the first deferral's time kept.
    let store = "lmtp://10.0.0.5:24";
    assert!(dir.delivery_marks("m1").await.unwrap().is_empty());
    dir.mark_delivery(
        "m1",
        "alice@example.org",
        store,
        MarkState::Sending,
        None,
        false,
    )
    .await
    .unwrap();
    dir.mark_delivery(
        "m1",
        "alice@example.org",
        store,
        MarkState::Deferred,
        Some("452 4.2.2 full"),
        true,
    )
    .await
    .unwrap();
    let first = dir.delivery_marks("m1").await.unwrap()[0]
        .first_failed_at
        .expect("deferral time");
    dir.mark_delivery(
        "m1",
        "alice@example.org",
        store,
        MarkState::Deferred,
        Some("452 again"),
        false,
    )
    .await
    .unwrap();
    let marks = dir.delivery_marks("m1").await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].state, MarkState::Deferred);
    assert_eq!(
        marks[0].first_failed_at,
        Some(first),
        "the first deferral's time stays"
    );
    assert_eq!(
        marks[0].first_full_at,
        Some(first),
        "a full mailbox's time, kept too"
    );
    assert_eq!(marks[0].detail.as_deref(), Some("452 again"));
    dir.mark_delivery(
        "m1",
        "alice@example.org",
        store,
        MarkState::Delivered,
        Some("250 ok"),
        false,
    )
    .await
    .unwrap();
    dir.mark_delivery(
        "m1",
        "alice@example.org",
        "maildir:",
        MarkState::Deferred,
        None,
        false,
    )
    .await
    .unwrap();
    let mut marks = dir.delivery_marks("m1").await.unwrap();
    marks.sort_by(|a, b| a.store.cmp(&b.store));
    assert_eq!(
        marks
            .iter()
            .map(|m| (m.store.as_str(), m.state))
            .collect::<Vec<_>>(),
        [
            (store, MarkState::Delivered),
            ("maildir:", MarkState::Deferred)
        ],
        "each store on its own"
    );
    // A first mark written as deferred has its time too, but no full time: the server
    // was unreachable, which starts no quota grace.
    assert!(marks[1].first_failed_at.is_some());
    assert!(marks[1].first_full_at.is_none());
    // Long details are cut at a character boundary, not refused.
    let long = "é".repeat(400);
    dir.mark_delivery(
        "m2",
        "alice@example.org",
        store,
        MarkState::Failed,
        Some(&long),
        false,
    )
    .await
    .unwrap();
    assert!(
        dir.delivery_marks("m2").await.unwrap()[0]
            .detail
            .as_ref()
            .unwrap()
            .len()
            <= 512
    );
    // Purge by age.
    assert_eq!(dir.purge_delivery_marks(0).await.unwrap(), 0);
    assert_eq!(dir.purge_delivery_marks(i64::MAX).await.unwrap(), 3);
    assert!(dir.delivery_marks("m1").await.unwrap().is_empty());
}

on_every_backend!("marks", scenario);
