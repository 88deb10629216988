//! The `[radius]` section of the configuration.

use std::time::Duration;

use serde::Deserialize;

/// How the RADIUS server listens, and the sizes of its caches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusConfig {
    /// UDP address for Access-Request (`0.0.0.0:1812` in production).
    pub auth_listen: String,
    /// UDP address for Accounting-Request (`0.0.0.0:1813` in production).
    pub acct_listen: String,
    /// The domain added to a bare User-Name (`alice` becomes `alice@{default_realm}`).
    /// Without it, only full addresses are accepted.
    pub default_realm: Option<String>,
    /// How long the reply to an Access-Request is kept to answer a retransmission with
    /// the same bytes (RFC 5080 §2.2.2). It must outlast the NAS's retry schedule
    /// (typically 3 tries, 3–5 s apart).
    #[serde(with = "humantime_serde")]
    pub duplicate_ttl: Duration,
    /// Most replies kept for retransmissions; the oldest go first.
    pub duplicate_cache_size: usize,
    /// How long a successful PAP check is remembered, so repeated logins skip argon2.
    /// `0s` turns the cache off. A password change takes effect at once regardless,
    /// because the cached entry is tied to the stored hash.
    #[serde(with = "humantime_serde")]
    pub password_cache_ttl: Duration,
    /// Most users in the password cache.
    pub password_cache_size: usize,
    /// Most argon2 checks running at once. Each takes tens of milliseconds of CPU and
    /// some memory, so a burst of bad passwords must queue rather than spawn hundreds
    /// of blocking threads.
    pub password_check_concurrency: usize,
    /// Most requests in flight at once; beyond that packets are dropped and counted, and
    /// the NAS retransmits.
    pub max_in_flight: usize,
    /// Sessions with no accounting for this long are forgotten, and at start the sessions
    /// projection replays `access.acct` from this far back. A session must send at least
    /// one Interim-Update within this age to stay counted for Simultaneous-Use.
    #[serde(with = "humantime_serde")]
    pub max_session_age: Duration,
    /// With several radius processes sharing one NATS log, each follows `access.acct` at
    /// this interval so Simultaneous-Use sees the sessions the others accepted. Unset (one
    /// process), the server updates its projection from its own accounting at once.
    #[serde(with = "humantime_serde")]
    pub follow_interval: Option<Duration>,
    /// Most `access.auth` audit events waiting to be published; beyond that they are
    /// dropped and counted rather than slowing authentication down.
    pub audit_queue: usize,
}

impl Default for RadiusConfig {
    fn default() -> Self {
        RadiusConfig {
            auth_listen: "127.0.0.1:1812".to_owned(),
            acct_listen: "127.0.0.1:1813".to_owned(),
            default_realm: None,
            duplicate_ttl: Duration::from_secs(30),
            duplicate_cache_size: 65_536,
            password_cache_ttl: Duration::from_secs(600),
            password_cache_size: 100_000,
            password_check_concurrency: 4,
            max_in_flight: 8192,
            max_session_age: Duration::from_secs(7 * 24 * 3600),
            follow_interval: None,
            audit_queue: 16_384,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: RadiusConfig = serde::Deserialize::deserialize(serde::de::value::MapDeserializer::<
            _,
            serde::de::value::Error,
        >::new(std::iter::empty::<(
            String,
            String,
        )>()))
        .unwrap();
        assert_eq!(c.auth_listen, "127.0.0.1:1812");
        assert_eq!(c.acct_listen, "127.0.0.1:1813");
        assert_eq!(c.max_session_age, Duration::from_secs(604_800));
        let bad = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(
            std::iter::once(("auth_lisen".to_owned(), "x".to_owned())),
        );
        assert!(RadiusConfig::deserialize(bad).is_err());
    }
}
