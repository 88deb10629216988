//! The two in-memory caches: replies for retransmissions (RFC 5080 §2.2.2) and
//! successful PAP checks. Both are bounded in size and age.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A map whose entries expire after `ttl`, and whose oldest entries go first when it is
/// full. Expiry is amortized over inserts, so no timer task is needed.
#[derive(Debug)]
struct TtlMap<K, V> {
    /// foldhash, seeded per process: every request looks the reply cache up, and
    /// SipHash was a visible share of a cached PAP request.
    map: HashMap<K, (Instant, V), foldhash::fast::RandomState>,
    order: VecDeque<(K, Instant)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> TtlMap<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        TtlMap {
            map: HashMap::default(),
            order: VecDeque::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn get<Q>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(key)
            .filter(|(at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V, now: Instant) {
        self.evict(now);
        self.order.push_back((key.clone(), now));
        self.map.insert(key, (now, value));
    }

    /// Replaces the value but keeps the entry's age.
    fn update(&mut self, key: &K, value: V) {
        if let Some(slot) = self.map.get_mut(key) {
            slot.1 = value;
        }
    }

    fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn evict(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && self.map.len() < self.capacity && self.order.len() < 2 * self.capacity {
                break;
            }
            // Only the entry this queue slot was made for: the key may have been
            // re-inserted since, with a newer slot further back.
            if self.map.get(key).is_some_and(|(t, _)| t == at) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent in a way that
    // matters (worst case a stale entry), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What identifies a retransmission: same source address and port, identifier and
/// Request Authenticator (RFC 5080 §2.2.2).
pub(crate) type RequestKey = (SocketAddr, u8, [u8; 16]);

#[derive(Debug, Clone)]
enum Slot {
    InProgress,
    Done(Arc<[u8]>),
}

/// What to do with a request, according to the reply cache.
#[derive(Debug)]
pub(crate) enum Begin {
    /// First time: process it, then `complete` or `abort`.
    New,
    /// A retransmission already answered: send these bytes again.
    Cached(Arc<[u8]>),
    /// A retransmission of a request still being processed: drop it.
    InProgress,
}

/// Replies kept to answer retransmissions with the same bytes.
#[derive(Debug)]
pub(crate) struct ReplyCache {
    inner: Mutex<TtlMap<RequestKey, Slot>>,
}

impl ReplyCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        ReplyCache {
            inner: Mutex::new(TtlMap::new(ttl, capacity)),
        }
    }

    pub(crate) fn begin(&self, key: RequestKey, now: Instant) -> Begin {
        let mut map = lock(&self.inner);
        match map.get(&key, now) {
            Some(Slot::Done(reply)) => Begin::Cached(reply.clone()),
            Some(Slot::InProgress) => Begin::InProgress,
            None => {
                map.insert(key, Slot::InProgress, now);
                Begin::New
            }
        }
    }

    pub(crate) fn complete(&self, key: &RequestKey, reply: Arc<[u8]>) {
        lock(&self.inner).update(key, Slot::Done(reply));
    }

    /// The request was dropped (say the directory was down): a retransmission must be
    /// processed afresh.
    pub(crate) fn abort(&self, key: &RequestKey) {
        lock(&self.inner).remove(key);
    }
}

/// Successful PAP checks, so a user who logs in again costs a SHA-256 instead of an
/// argon2 run. An entry holds the stored hash it was checked against (a password change
/// invalidates it) and an HMAC-SHA256 of the password under a key drawn at start and
/// never stored: a memory dump does not yield passwords, nor hashes usable elsewhere.
#[derive(Debug)]
pub(crate) struct PasswordCache {
    key: [u8; 32],
    inner: Option<Mutex<TtlMap<String, Verified>>>,
}

/// The stored hash a password was checked against, and the keyed digest of that password.
type Verified = (String, [u8; 32]);

impl PasswordCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let mut key = [0u8; 32];
        // Without OS randomness the cache is simply off: correctness does not depend on it.
        let enabled = !ttl.is_zero() && capacity > 0 && getrandom::fill(&mut key).is_ok();
        PasswordCache {
            key,
            inner: enabled.then(|| Mutex::new(TtlMap::new(ttl, capacity))),
        }
    }

    fn digest(&self, password: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` was recently verified for `address` against `password_hash`.
    pub(crate) fn hit(&self, address: &str, password_hash: &str, password: &[u8]) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let digest = self.digest(password);
        let map = lock(inner);
        map.get(address, Instant::now())
            .is_some_and(|(hash, d)| hash == password_hash && crate::crypto::ct_eq(d, &digest))
    }

    pub(crate) fn remember(&self, address: &str, password_hash: &str, password: &[u8]) {
        let Some(inner) = &self.inner else { return };
        let digest = self.digest(password);
        lock(inner).insert(
            address.to_owned(),
            (password_hash.to_owned(), digest),
            Instant::now(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_cache_answers_retransmissions_until_ttl() {
        let cache = ReplyCache::new(Duration::from_secs(5), 100);
        let key: RequestKey = ("127.0.0.1:5000".parse().unwrap(), 1, [9; 16]);
        let now = Instant::now();
        assert!(matches!(cache.begin(key, now), Begin::New));
        assert!(matches!(cache.begin(key, now), Begin::InProgress));
        cache.complete(&key, Arc::from(&b"reply"[..]));
        match cache.begin(key, now + Duration::from_secs(1)) {
            Begin::Cached(r) => assert_eq!(&*r, b"reply"),
            other => panic!("{other:?}"),
        }
        // Another port, identifier or authenticator is another request.
        assert!(matches!(
            cache.begin(("127.0.0.1:5001".parse().unwrap(), 1, [9; 16]), now),
            Begin::New
        ));
        assert!(matches!(cache.begin((key.0, 2, [9; 16]), now), Begin::New));
        assert!(matches!(cache.begin((key.0, 1, [8; 16]), now), Begin::New));
        assert!(matches!(
            cache.begin(key, now + Duration::from_secs(6)),
            Begin::New
        ));
        cache.abort(&key);
        assert!(matches!(
            cache.begin(key, now + Duration::from_secs(6)),
            Begin::New
        ));
    }

    #[test]
    fn reply_cache_is_bounded() {
        let cache = ReplyCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        for i in 0..1000u16 {
            let key: RequestKey = (SocketAddr::from(([127, 0, 0, 1], i)), 0, [0; 16]);
            let _ = cache.begin(key, now);
        }
        let inner = lock(&cache.inner);
        assert!(inner.map.len() <= 10);
        assert!(inner.order.len() <= 20);
    }

    #[test]
    fn password_cache_is_tied_to_hash_and_password() {
        let cache = PasswordCache::new(Duration::from_secs(60), 10);
        cache.remember("a@x", "$argon2id$1", b"pw");
        assert!(cache.hit("a@x", "$argon2id$1", b"pw"));
        assert!(!cache.hit("a@x", "$argon2id$1", b"pw2"));
        assert!(!cache.hit("a@x", "$argon2id$2", b"pw"));
        assert!(!cache.hit("b@x", "$argon2id$1", b"pw"));
        let off = PasswordCache::new(Duration::ZERO, 10);
        off.remember("a@x", "h", b"pw");
        assert!(!off.hit("a@x", "h", b"pw"));
    }
}
