//! The recursion cache: answers from upstream, by question, until their TTL runs out.
//!
//! hickory-resolver and the recursor keep caches of their own, but they do not say
//! whether an answer came from them, and the server must know (for the `cache` zone
//! kind and the hit ratio). This one sits in front and answers without a task, a
//! future or a lock held across an await.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RData, Record, RecordType},
};

/// Answers are kept at most this long, whatever their TTL says.
const MAX_TTL: u32 = 86_400;
/// Negative answers without an SOA to say how long are kept this long (RFC 2308 §5
/// allows none; a few seconds absorb a burst of the same query).
const NEGATIVE_TTL_WITHOUT_SOA: u32 = 5;
const SHARDS: usize = 16;

/// A cached upstream answer.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
}

#[derive(Debug)]
struct Entry {
    value: Arc<Cached>,
    stored: Instant,
    expires: Instant,
}

type Key = (Name, RecordType);

/// A sharded map with a size bound; when a shard is full, expired entries go, then
/// arbitrary ones (an eighth of the shard).
pub(crate) struct Cache {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl Cache {
    pub(crate) fn new(size: usize) -> Self {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: size.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // Entries are only ever inserted or removed whole.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer to a question, with TTLs counted down by the time it spent in
    /// the cache.
    pub(crate) fn get(&self, name: &Name, rtype: RecordType) -> Option<Cached> {
        let key = (name.clone(), rtype);
        let now = Instant::now();
        let (value, stored) = {
            let mut shard = self.shard(&key);
            let entry = shard.get(&key)?;
            if entry.expires <= now {
                shard.remove(&key);
                return None;
            }
            (entry.value.clone(), entry.stored)
        };
        let age = now.duration_since(stored).as_secs() as u32;
        let mut cached = (*value).clone();
        for r in cached
            .answers
            .iter_mut()
            .chain(cached.authorities.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(cached)
    }

    /// Stores an answer for as long as its records allow. SERVFAIL and the like are not
    /// stored.
    pub(crate) fn put(&self, name: &Name, rtype: RecordType, value: Cached) {
        if self.per_shard == 0 {
            return;
        }
        let ttl = match value.rcode {
            ResponseCode::NoError if !value.answers.is_empty() => {
                value.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => negative_ttl(&value.authorities),
            _ => return,
        }
        .min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        let key = (name.clone(), rtype);
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard {
                let drop: Vec<Key> = shard.keys().take(self.per_shard / 8 + 1).cloned().collect();
                for k in drop {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                value: Arc::new(value),
                stored: now,
                expires: now + Duration::from_secs(ttl.into()),
            },
        );
    }

    /// Answers held (an estimate: expired ones count until touched).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// min(SOA TTL, SOA MINIMUM) of the authority section's SOA (RFC 2308 §5).
fn negative_ttl(authorities: &[Record]) -> u32 {
    authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(NEGATIVE_TTL_WITHOUT_SOA)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn stores_positive_and_negative_answers() {
        let cache = Cache::new(64);
        let name = Name::from_str("www.example.org.").unwrap();
        let a = Record::from_rdata(
            name.clone(),
            300,
            RData::A("192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap().into()),
        );
        cache.put(
            &name,
            RecordType::A,
            Cached {
                rcode: ResponseCode::NoError,
                answers: vec![a],
                authorities: vec![],
            },
        );
        let hit = cache
            .get(&Name::from_str("WWW.example.org.").unwrap(), RecordType::A)
            .unwrap();
        assert_eq!(hit.answers.len(), 1);
        assert!(cache.get(&name, RecordType::AAAA).is_none());
        cache.put(
            &name,
            RecordType::MX,
            Cached {
                rcode: ResponseCode::ServFail,
                answers: vec![],
                authorities: vec![],
            },
        );
        assert!(
            cache.get(&name, RecordType::MX).is_none(),
            "SERVFAIL is not cached"
        );
    }

    #[test]
    fn stays_within_its_size() {
        let cache = Cache::new(32);
        for i in 0..1000 {
            let name = Name::from_str(&format!("h{i}.example.org.")).unwrap();
            let a = Record::from_rdata(
                name.clone(),
                300,
                RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
            );
            cache.put(
                &name,
                RecordType::A,
                Cached {
                    rcode: ResponseCode::NoError,
                    answers: vec![a],
                    authorities: vec![],
                },
            );
        }
        assert!(cache.len() <= 32 + SHARDS);
    }
}
