//! NAS clients and RADIUS profiles on every backend: SQLite, MariaDB and PostgreSQL. The
//! server tests use the machine's servers with a throwaway database per run
//! (`PAMPA_TEST_MYSQL_URL`, `PAMPA_TEST_POSTGRES_URL`, base URLs without a database).

mod support;

use std::net::{IpAddr, Ipv4Addr};

use pampa_directory::{verify_password_hash, Directory, DirectoryError, RadiusProfile};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn nas_network(dir: &Directory, source: &str) -> Option<String> {
    dir.nas_for_ip(ip(source))
        .await
        .unwrap()
        .map(|n| n.network.to_string())
}

async fn nas_scenario(dir: &Directory) {
    let single = dir
        .add_nas("192.0.2.7", "testing123", true, Some("  bras-1  "))
        .await
        .unwrap();
    assert_eq!(single.network.to_string(), "192.0.2.7/32");
    assert_eq!(single.secret, "testing123");
    assert!(single.require_message_authenticator);
    assert_eq!(single.description.as_deref(), Some("bras-1"));
    dir.add_nas("192.0.2.0/24", "a-longer-shared-secret", false, None)
        .await
        .unwrap();
    dir.add_nas("10.0.0.0/8", "ten-net-secret", true, Some(""))
        .await
        .unwrap();
    dir.add_nas("2001:DB8::/32", "v6-secret-here", true, None)
        .await
        .unwrap();

    // The same network in another spelling is the same NAS.
    assert!(matches!(
        dir.add_nas("192.0.2.7/32", "other-secret", true, None)
            .await,
        Err(DirectoryError::Exists(_))
    ));
    assert!(matches!(
        dir.add_nas("192.0.2.9/24", "other-secret", true, None)
            .await,
        Err(DirectoryError::InvalidNetwork { .. })
    ));
    assert!(matches!(
        dir.add_nas("nas.example.org", "other-secret", true, None)
            .await,
        Err(DirectoryError::InvalidNetwork { .. })
    ));
    for secret in ["", "short", &"s".repeat(129)] {
        assert!(matches!(
            dir.add_nas("198.51.100.1", secret, true, None).await,
            Err(DirectoryError::InvalidSecret { .. })
        ));
    }

    let listed: Vec<(String, bool, Option<String>)> = dir
        .list_nas()
        .await
        .unwrap()
        .into_iter()
        .map(|n| {
            (
                n.network.to_string(),
                n.require_message_authenticator,
                n.description,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("10.0.0.0/8".into(), true, None),
            ("192.0.2.0/24".into(), false, None),
            ("192.0.2.7/32".into(), true, Some("bras-1".into())),
            ("2001:db8::/32".into(), true, None),
        ]
    );

    assert_eq!(
        nas_network(dir, "192.0.2.7").await.as_deref(),
        Some("192.0.2.7/32")
    );
    assert_eq!(
        nas_network(dir, "192.0.2.8").await.as_deref(),
        Some("192.0.2.0/24")
    );
    assert_eq!(
        nas_network(dir, "::ffff:192.0.2.7").await.as_deref(),
        Some("192.0.2.7/32")
    );
    assert_eq!(
        nas_network(dir, "10.255.1.1").await.as_deref(),
        Some("10.0.0.0/8")
    );
    assert_eq!(
        nas_network(dir, "2001:db8:ffff::1").await.as_deref(),
        Some("2001:db8::/32")
    );
    assert_eq!(nas_network(dir, "198.51.100.1").await, None);
    assert_eq!(nas_network(dir, "2001:db9::1").await, None);
    let found = dir.nas_for_ip(ip("192.0.2.8")).await.unwrap().unwrap();
    assert_eq!(found.secret, "a-longer-shared-secret");
    assert!(!found.require_message_authenticator);

    dir.remove_nas("192.0.2.7").await.unwrap();
    assert_eq!(
        nas_network(dir, "192.0.2.7").await.as_deref(),
        Some("192.0.2.0/24")
    );
    assert!(matches!(
        dir.remove_nas("192.0.2.7/32").await,
        Err(DirectoryError::UnknownNas(_))
    ));
    assert!(matches!(
        dir.remove_nas("junk").await,
        Err(DirectoryError::InvalidNetwork { .. })
    ));
    assert_eq!(dir.list_nas().await.unwrap().len(), 3);
}

async fn profile_scenario(dir: &Directory) {
    dir.add_domain("example.org").await.unwrap();
    dir.add_user("alice@example.org", "s3cret", "normal")
        .await
        .unwrap();

    // A user with no RADIUS settings has an empty profile and no CHAP secret.
    let alice = dir.radius_user("Alice@Example.org").await.unwrap().unwrap();
    assert_eq!(alice.address, "alice@example.org");
    assert_eq!(alice.chap_secret, None);
    assert!(alice.profile.is_empty());
    assert!(verify_password_hash("s3cret", &alice.password_hash));
    assert!(!verify_password_hash("wrong", &alice.password_hash));
    assert!(!format!("{alice:?}").contains(&alice.password_hash));

    assert!(dir
        .radius_user("nobody@example.org")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        dir.radius_user("not an address").await,
        Err(DirectoryError::InvalidAddress(_))
    ));

    let profile = RadiusProfile {
        session_timeout: Some(86_400),
        idle_timeout: Some(900),
        framed_ip: Some(Ipv4Addr::new(198, 51, 100, 9)),
        framed_pool: None,
        class: Some("residential-100M".into()),
        simultaneous_use: Some(u32::MAX),
    };
    dir.set_radius_profile("alice@example.org", Some("chap-pw"), &profile)
        .await
        .unwrap();
    let alice = dir.radius_user("alice@example.org").await.unwrap().unwrap();
    assert_eq!(alice.chap_secret.as_deref(), Some("chap-pw"));
    assert_eq!(alice.profile, profile);

    // A second write replaces the first (no stale columns left behind).
    let pooled = RadiusProfile {
        framed_pool: Some("pool-east".into()),
        simultaneous_use: Some(1),
        ..RadiusProfile::default()
    };
    dir.set_radius_profile("alice@example.org", None, &pooled)
        .await
        .unwrap();
    let alice = dir.radius_user("alice@example.org").await.unwrap().unwrap();
    assert_eq!(alice.chap_secret, None);
    assert_eq!(alice.profile, pooled);

    // Refusals leave the stored profile alone.
    let both = RadiusProfile {
        framed_ip: Some(Ipv4Addr::new(198, 51, 100, 10)),
        ..pooled.clone()
    };
    assert!(matches!(
        dir.set_radius_profile("alice@example.org", None, &both)
            .await,
        Err(DirectoryError::InvalidRadiusSetting { .. })
    ));
    assert!(matches!(
        dir.set_radius_profile("alice@example.org", Some(""), &pooled)
            .await,
        Err(DirectoryError::InvalidSecret { .. })
    ));
    assert!(matches!(
        dir.set_radius_profile("nobody@example.org", None, &pooled)
            .await,
        Err(DirectoryError::UnknownUser(_))
    ));
    let alice = dir.radius_user("alice@example.org").await.unwrap().unwrap();
    assert_eq!(alice.profile, pooled);

    // Clearing everything leaves an empty profile.
    dir.set_radius_profile("alice@example.org", None, &RadiusProfile::default())
        .await
        .unwrap();
    let alice = dir.radius_user("alice@example.org").await.unwrap().unwrap();
    assert!(alice.profile.is_empty());

    // The profile goes with the user: a new user at the same address starts clean.
    dir.set_radius_profile("alice@example.org", Some("chap-pw"), &profile)
        .await
        .unwrap();
    dir.remove_user("alice@example.org").await.unwrap();
    dir.add_user("alice@example.org", "other", "normal")
        .await
        .unwrap();
    let alice = dir.radius_user("alice@example.org").await.unwrap().unwrap();
    assert_eq!(alice.chap_secret, None);
    assert!(alice.profile.is_empty());
}

async fn scenario(url: &str) {
    let dir = Directory::connect(url).await.expect("connect");
    nas_scenario(&dir).await;
    profile_scenario(&dir).await;
}

on_every_backend!("radius", scenario);
