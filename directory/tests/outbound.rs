//! Outbound mail's tables on every backend: sender aliases, limits and flags, DKIM keys,
//! and the relay queue with its leases (SQLite, MariaDB and PostgreSQL).

mod support;

use pampa_directory::{Directory, DirectoryError, DkimKey, QueueEntry, QueueStatus};

fn entry(message: &str, recipient: &str, now: i64) -> QueueEntry {
    QueueEntry {
        message_id: message.to_owned(),
        recipient: recipient.to_owned(),
        domain: recipient.rsplit_once('@').unwrap().1.to_owned(),
        sender: "alice@example.org".to_owned(),
        submitted_by: "alice@example.org".to_owned(),
        event_id: format!("event-{message}"),
        blob_key: format!("blob-{message}"),
        blob_size: 1234,
        blob_sha256: "ab".repeat(32),
        status: QueueStatus::Queued,
        attempts: 0,
        queued_at: now,
        next_attempt_at: now,
        last_reply: None,
        finished_at: None,
        lease_until: 0,
    }
}

async fn scenario(url: &str) {
    let dir = Directory::connect(url).await.unwrap();
    dir.add_domain("example.org").await.unwrap();
    dir.add_user("alice@example.org", "pw", "normal")
        .await
        .unwrap();
    dir.add_user("bob@example.org", "pw", "normal")
        .await
        .unwrap();

    // Aliases.
    assert!(dir
        .may_send_as("alice@example.org", "Alice@Example.org")
        .await
        .unwrap());
    assert!(!dir
        .may_send_as("alice@example.org", "sales@example.org")
        .await
        .unwrap());
    dir.add_sender_alias("alice@example.org", "sales@example.org")
        .await
        .unwrap();
    assert!(matches!(
        dir.add_sender_alias("alice@example.org", "sales@example.org")
            .await,
        Err(DirectoryError::Exists(_))
    ));
    assert!(dir
        .may_send_as("alice@example.org", "sales@example.org")
        .await
        .unwrap());
    assert!(!dir
        .may_send_as("bob@example.org", "sales@example.org")
        .await
        .unwrap());
    assert_eq!(
        dir.sender_aliases("alice@example.org").await.unwrap(),
        ["sales@example.org"]
    );
    assert!(matches!(
        dir.add_sender_alias("nobody@example.org", "x@example.org")
            .await,
        Err(DirectoryError::UnknownUser(_))
    ));

    // Limits and flags, with the row created on first write and kept after.
    assert_eq!(
        dir.outbound_profile("alice@example.org").await.unwrap(),
        Default::default()
    );
    dir.set_outbound_limits("alice@example.org", Some(10), None)
        .await
        .unwrap();
    let profile = dir.outbound_profile("alice@example.org").await.unwrap();
    assert_eq!(
        (profile.messages_per_hour, profile.recipients_per_hour),
        (Some(10), None)
    );
    assert!(dir
        .flag_sender("alice@example.org", "score 9.0", "m1")
        .await
        .unwrap());
    assert!(
        !dir.flag_sender("alice@example.org", "score 12.0", "m2")
            .await
            .unwrap(),
        "the first flag stays"
    );
    let flagged = dir.flagged_senders().await.unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(
        (flagged[0].reason.as_str(), flagged[0].message_id.as_deref()),
        ("score 9.0", Some("m1"))
    );
    assert_eq!(
        dir.outbound_profile("alice@example.org")
            .await
            .unwrap()
            .messages_per_hour,
        Some(10)
    );
    assert!(dir.unflag_sender("alice@example.org").await.unwrap());
    assert!(!dir.unflag_sender("alice@example.org").await.unwrap());
    assert!(dir.flagged_senders().await.unwrap().is_empty());
    // A flag on a user without a profile row creates it.
    assert!(dir
        .flag_sender("bob@example.org", "virus", "m3")
        .await
        .unwrap());

    // DKIM keys: one per domain, a new one replaces the old.
    let key = |selector: &str| DkimKey {
        domain: "example.org".into(),
        selector: selector.into(),
        algorithm: "rsa-sha256".into(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n".repeat(20),
        created_at: 1,
    };
    assert!(dir.dkim_key("example.org").await.unwrap().is_none());
    dir.put_dkim_key(&key("a")).await.unwrap();
    dir.put_dkim_key(&key("b")).await.unwrap();
    assert_eq!(
        dir.dkim_key("Example.ORG").await.unwrap().unwrap().selector,
        "b"
    );
    // Rotation: the next key waits beside the current one until activated.
    assert!(dir
        .activate_dkim_key("example.org")
        .await
        .unwrap()
        .is_none());
    dir.put_next_dkim_key(&key("c")).await.unwrap();
    assert_eq!(
        dir.dkim_key("example.org").await.unwrap().unwrap().selector,
        "b"
    );
    assert_eq!(
        dir.next_dkim_key("example.org")
            .await
            .unwrap()
            .unwrap()
            .selector,
        "c"
    );
    assert_eq!(
        dir.activate_dkim_key("example.org")
            .await
            .unwrap()
            .unwrap()
            .selector,
        "c"
    );
    assert_eq!(
        dir.dkim_key("example.org").await.unwrap().unwrap().selector,
        "c"
    );
    assert!(dir.next_dkim_key("example.org").await.unwrap().is_none());

    // The queue: idempotent enqueue, leases, defer, finish, retry.
    // Real time: `retry_relay` makes rows due as of the clock.
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let now = real_now - 1000;
    let rows = [
        entry("m1", "x@remote.test", now),
        entry("m1", "y@remote.test", now),
        entry("m2", "z@other.test", now + 50),
    ];
    assert_eq!(dir.enqueue_relay(&rows).await.unwrap(), 3);
    assert_eq!(
        dir.enqueue_relay(&rows[..1]).await.unwrap(),
        0,
        "a redelivery adds nothing"
    );
    let first = dir.claim_due_relay(now, 60, 10, &[]).await.unwrap();
    assert_eq!(first.len(), 2, "m2 is not due yet");
    assert_eq!(first[0].blob_size, 1234);
    assert!(
        dir.claim_due_relay(now, 60, 10, &[])
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimed twice"
    );
    let lease = first[0].lease_until;
    assert_eq!(lease, now + 60, "a claim returns the lease it set");
    assert!(
        !dir.defer_relay("m1", "x@remote.test", "451", now + 300, lease + 1)
            .await
            .unwrap(),
        "a writer that no longer holds the lease changes nothing"
    );
    assert!(dir
        .defer_relay("m1", "x@remote.test", "451 4.2.0 later", now + 300, lease)
        .await
        .unwrap());
    assert!(dir
        .finish_relay(
            "m1",
            "y@remote.test",
            QueueStatus::Delivered,
            "250 ok",
            Some(lease)
        )
        .await
        .unwrap());
    assert!(
        !dir.finish_relay(
            "m1",
            "y@remote.test",
            QueueStatus::Bounced,
            "550",
            Some(lease)
        )
        .await
        .unwrap(),
        "finished once"
    );
    let m1 = dir.relay_message("m1").await.unwrap();
    let x = m1.iter().find(|e| e.recipient == "x@remote.test").unwrap();
    assert_eq!(
        (x.status, x.attempts, x.next_attempt_at),
        (QueueStatus::Queued, 1, now + 300)
    );
    assert_eq!(x.last_reply.as_deref(), Some("451 4.2.0 later"));
    let y = m1.iter().find(|e| e.recipient == "y@remote.test").unwrap();
    assert_eq!((y.status, y.attempts), (QueueStatus::Delivered, 1));
    assert!(y.finished_at.is_some());
    let waiting: Vec<String> = dir
        .relay_queue()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.recipient)
        .collect();
    assert_eq!(waiting, ["x@remote.test", "z@other.test"]);
    assert_eq!(dir.relay_queue_size().await.unwrap(), (2, 1));
    assert_eq!(dir.retry_relay("m1").await.unwrap(), 1);
    assert_eq!(
        dir.claim_due_relay(real_now + 1, 60, 10, &[])
            .await
            .unwrap()
            .len(),
        2,
        "x made due again, and m2"
    );
    assert!(dir
        .finish_relay("m2", "z@other.test", QueueStatus::Dropped, "dropped", None)
        .await
        .unwrap());
    assert_eq!(dir.relay_message("m2").await.unwrap()[0].attempts, 0);
    // Finished rows go after the retention; queued ones never.
    assert_eq!(dir.purge_relay_queue(0).await.unwrap(), 0);
    assert_eq!(
        dir.purge_relay_queue(i64::MAX).await.unwrap(),
        2,
        "y (delivered) and z (dropped)"
    );
    assert_eq!(
        dir.relay_message("m1").await.unwrap().len(),
        1,
        "x is still queued"
    );

    // Removing a user takes their aliases and profile along.
    dir.remove_user("alice@example.org").await.unwrap();
    dir.add_user("alice@example.org", "pw", "normal")
        .await
        .unwrap();
    assert!(!dir
        .may_send_as("alice@example.org", "sales@example.org")
        .await
        .unwrap());
    assert_eq!(
        dir.outbound_profile("alice@example.org").await.unwrap(),
        Default::default()
    );
}

on_every_backend!("outbound", scenario);
