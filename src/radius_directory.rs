//! The SQL directory as the RADIUS server asks it: [`DirectoryForRadius`] implements
//! `pampa_radius::RadiusDirectory` over `pampa_directory::Directory`.
//!
//! NAS lookups happen for every packet, including every packet of a flood from an unknown
//! source, so they never go to SQL one by one: the whole NAS list is held in memory and
//! reloaded when it is older than [`NAS_CACHE_TTL`]. The list is small (one row per NAS or
//! NAS network) and bounded by what operators add, whereas a per-source-IP cache would grow
//! with every spoofed address. The server may cache on top of this (its reply and password
//! caches); this one only keeps SQL off the per-packet path.
//!
//! Users found are cached for the same TTL, bounded to [`USER_CACHE_SIZE`] entries: a
//! lookup per Access-Request through the SQL pool costs several times what the rest of a
//! PAP check does (measured in `ops/bench/radius.sh`). So a changed password, profile or
//! removal applies within the TTL. Unknown names are not cached, so a flood of made-up
//! user names cannot fill the cache.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use pampa_directory::{
    radius::most_specific_nas, verify_password_hash, Directory, DirectoryError, NasClient,
};
use pampa_radius::directory::{self as radius, LookupError, RadiusDirectory};

/// How long a loaded NAS list is used before it is read again: how soon `pampa nas add`
/// and `pampa nas remove` take effect in a running server.
pub const NAS_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most users held in the cache; when it is full, expired entries go, then all.
pub const USER_CACHE_SIZE: usize = 100_000;

/// The NAS list as last read, and when, with each entry already in the server's form, so
/// a packet's lookup hands out an `Arc` instead of building a copy of its secret.
struct NasSnapshot {
    loaded: Instant,
    clients: Arc<NasList>,
}

/// The directory's NAS rows and, at the same index, the server's view of each.
struct NasList {
    rows: Vec<NasClient>,
    served: Vec<Arc<radius::NasClient>>,
}

/// `pampa_directory::Directory` adapted to the RADIUS server's `RadiusDirectory`, with the
/// NAS list cached in memory for [`NAS_CACHE_TTL`].
pub struct DirectoryForRadius {
    directory: Directory,
    ttl: Duration,
    nas: RwLock<Option<NasSnapshot>>,
    /// Held while the NAS list is reloaded, so a burst of packets that all find the list
    /// stale causes one SQL query, not one each.
    reload: tokio::sync::Mutex<()>,
    /// Users found, by address, with when they were read.
    users: Mutex<HashMap<String, (Instant, Arc<radius::RadiusUser>)>>,
}

impl DirectoryForRadius {
    /// Adapts `directory`, caching the NAS list for [`NAS_CACHE_TTL`].
    pub fn new(directory: Directory) -> Self {
        Self::with_ttl(directory, NAS_CACHE_TTL)
    }

    /// Adapts `directory`, caching the NAS list for `ttl` (zero: read it every time).
    pub fn with_ttl(directory: Directory, ttl: Duration) -> Self {
        DirectoryForRadius {
            directory,
            ttl,
            nas: RwLock::new(None),
            reload: tokio::sync::Mutex::new(()),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// The cached NAS list, if it is still fresh.
    fn fresh_nas(&self) -> Option<Arc<NasList>> {
        let snapshot = self.nas.read().unwrap_or_else(PoisonError::into_inner);
        snapshot
            .as_ref()
            .filter(|s| s.loaded.elapsed() < self.ttl)
            .map(|s| Arc::clone(&s.clients))
    }

    /// The NAS list, from memory or, when stale, from SQL. A failed reload is an error
    /// (the server drops the packet and the NAS retransmits) rather than a stale answer,
    /// so a removed NAS is never accepted for longer than the TTL.
    async fn nas_list(&self) -> Result<Arc<NasList>, DirectoryError> {
        if let Some(clients) = self.fresh_nas() {
            return Ok(clients);
        }
        let _reloading = self.reload.lock().await;
        if let Some(clients) = self.fresh_nas() {
            return Ok(clients);
        }
        let rows = self.directory.list_nas().await?;
        let served = rows
            .iter()
            .map(|nas| {
                Arc::new(radius::NasClient {
                    network: nas.network.to_string(),
                    secret: nas.secret.as_bytes().to_vec(),
                    require_message_authenticator: nas.require_message_authenticator,
                })
            })
            .collect();
        let clients = Arc::new(NasList { rows, served });
        *self.nas.write().unwrap_or_else(PoisonError::into_inner) = Some(NasSnapshot {
            loaded: Instant::now(),
            clients: Arc::clone(&clients),
        });
        Ok(clients)
    }
}

impl RadiusDirectory for DirectoryForRadius {
    async fn nas(&self, ip: IpAddr) -> Result<Option<Arc<radius::NasClient>>, LookupError> {
        let clients = self.nas_list().await?;
        Ok(most_specific_nas(&clients.rows, ip).and_then(|found| {
            let index = clients
                .rows
                .iter()
                .position(|row| std::ptr::eq(row, found))?;
            clients.served.get(index).cloned()
        }))
    }

    async fn user(&self, address: &str) -> Result<Option<Arc<radius::RadiusUser>>, LookupError> {
        if !self.ttl.is_zero() {
            let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((read, user)) = users.get(address) {
                if read.elapsed() < self.ttl {
                    return Ok(Some(Arc::clone(user)));
                }
            }
        }
        let user = match self.directory.radius_user(address).await {
            Ok(user) => user,
            // A User-Name that is no address cannot be anyone: an unknown user, not a
            // directory failure.
            Err(DirectoryError::InvalidAddress(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let user = user.map(|user| {
            Arc::new(radius::RadiusUser {
                address: user.address,
                password_hash: user.password_hash,
                chap_secret: user.chap_secret,
                profile: radius::RadiusProfile {
                    session_timeout: user.profile.session_timeout,
                    idle_timeout: user.profile.idle_timeout,
                    framed_ip: user.profile.framed_ip,
                    framed_pool: user.profile.framed_pool,
                    class: user.profile.class,
                    simultaneous_use: user.profile.simultaneous_use,
                },
            })
        });
        if let Some(found) = &user {
            if !self.ttl.is_zero() {
                let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
                if users.len() >= USER_CACHE_SIZE {
                    let ttl = self.ttl;
                    users.retain(|_, (read, _)| read.elapsed() < ttl);
                    if users.len() >= USER_CACHE_SIZE {
                        users.clear();
                    }
                }
                users.insert(address.to_owned(), (Instant::now(), Arc::clone(found)));
            }
        }
        Ok(user)
    }

    fn verify_password(&self, user: &radius::RadiusUser, password: &str) -> bool {
        verify_password_hash(password, &user.password_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pampa_directory::RadiusProfile;

    async fn directory(tmp: &tempfile::TempDir) -> Directory {
        let url = format!("sqlite://{}/dir.db", tmp.path().display());
        Directory::connect(&url).await.unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn nas_lookups_come_from_the_cached_list() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp).await;
        dir.add_nas("192.0.2.0/24", "net-secret-1", false, None)
            .await
            .unwrap();
        dir.add_nas("192.0.2.7", "host-secret-1", true, None)
            .await
            .unwrap();
        let cached = DirectoryForRadius::new(dir.clone());
        let nas = cached.nas(ip("192.0.2.7")).await.unwrap().unwrap();
        assert_eq!(nas.network, "192.0.2.7/32");
        assert_eq!(nas.secret, b"host-secret-1");
        assert!(nas.require_message_authenticator);
        let nas = cached.nas(ip("192.0.2.8")).await.unwrap().unwrap();
        assert_eq!(nas.network, "192.0.2.0/24");
        assert!(!nas.require_message_authenticator);
        assert_eq!(cached.nas(ip("198.51.100.1")).await.unwrap(), None);

        // Within the TTL a removal is not seen yet; with no TTL it is at once.
        dir.remove_nas("192.0.2.7").await.unwrap();
        let nas = cached.nas(ip("192.0.2.7")).await.unwrap().unwrap();
        assert_eq!(nas.network, "192.0.2.7/32");
        let uncached = DirectoryForRadius::with_ttl(dir, Duration::ZERO);
        let nas = uncached.nas(ip("192.0.2.7")).await.unwrap().unwrap();
        assert_eq!(nas.network, "192.0.2.0/24");
    }

    #[tokio::test]
    async fn users_carry_their_profile_and_verify_with_argon2() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp).await;
        dir.add_domain("example.org").await.unwrap();
        dir.add_user("alice@example.org", "alice-pw", "normal")
            .await
            .unwrap();
        let profile = RadiusProfile {
            session_timeout: Some(3600),
            framed_pool: Some("pool-a".into()),
            simultaneous_use: Some(1),
            ..RadiusProfile::default()
        };
        dir.set_radius_profile("alice@example.org", Some("chap-pw"), &profile)
            .await
            .unwrap();
        let adapter = DirectoryForRadius::new(dir);
        let alice = adapter.user("alice@example.org").await.unwrap().unwrap();
        assert_eq!(alice.chap_secret.as_deref(), Some("chap-pw"));
        assert_eq!(alice.profile.session_timeout, Some(3600));
        assert_eq!(alice.profile.framed_pool.as_deref(), Some("pool-a"));
        assert_eq!(alice.profile.simultaneous_use, Some(1));
        assert!(adapter.verify_password(&alice, "alice-pw"));
        assert!(!adapter.verify_password(&alice, "chap-pw"));
        assert_eq!(adapter.user("bob@example.org").await.unwrap(), None);
        assert_eq!(adapter.user("not an address").await.unwrap(), None);
    }

    #[tokio::test]
    async fn found_users_are_cached_for_the_ttl_and_unknown_ones_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp).await;
        dir.add_domain("example.org").await.unwrap();
        dir.add_user("alice@example.org", "alice-pw", "normal")
            .await
            .unwrap();
        let cached = DirectoryForRadius::new(dir.clone());
        let uncached = DirectoryForRadius::with_ttl(dir.clone(), Duration::ZERO);
        assert!(cached.user("alice@example.org").await.unwrap().is_some());
        assert_eq!(cached.user("bob@example.org").await.unwrap(), None);
        dir.add_user("bob@example.org", "bob-pw", "normal")
            .await
            .unwrap();
        dir.remove_user("alice@example.org").await.unwrap();
        // alice is still served from the cache within the TTL; bob, unknown before, is
        // found at once; without a TTL the removal shows at once.
        assert!(cached.user("alice@example.org").await.unwrap().is_some());
        assert!(cached.user("bob@example.org").await.unwrap().is_some());
        assert_eq!(uncached.user("alice@example.org").await.unwrap(), None);
    }
}
