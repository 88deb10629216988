//! Failure guards: a key (a client IP, a user name) that fails too often within a window
//! is refused for a while. The MX uses one against dictionary attacks (unknown
//! recipients per IP, so nobody can harvest the user list); submission uses two against
//! password guessing (failed AUTH per IP and per user).
//!
//! The state is per process and in memory: an attacker spread over several processes
//! gets a few more guesses, which is acceptable for a rate limit.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

struct Entry {
    window_start: Instant,
    unknown: u32,
    blocked_until: Option<Instant>,
}

/// Counts failures per key, and refuses a key for `block` once it has failed `limit`
/// times within `window`.
pub struct FailureGuard<K> {
    limit: u32,
    window: Duration,
    block: Duration,
    entries: Mutex<HashMap<K, Entry>>,
}

/// Counts unknown recipients per client IP.
pub(crate) type DictionaryGuard = FailureGuard<IpAddr>;

/// Above this many tracked keys, stale entries are swept on the next update.
const SWEEP_AT: usize = 10_000;

/// Above this many keys after a sweep, only the blocked ones are kept.
const MAX_TRACKED: usize = 100_000;

/// The key of a client address in a guard: the address itself for IPv4, its /64 for
/// IPv6, since one host holds a whole /64 and could otherwise rotate addresses.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

impl<K: Hash + Eq> FailureGuard<K> {
    /// A guard that blocks for `block` after `limit` failures within `window`.
    pub fn new(limit: u32, window: Duration, block: Duration) -> Self {
        FailureGuard {
            limit: limit.max(1),
            window,
            block,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` is refused right now.
    pub fn is_blocked(&self, key: &K) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// Records one failure; returns true when this one trips the limit.
    pub fn record_failure(&self, key: K) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_AT {
            let (window, _) = (self.window, self.block);
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now)
                    || now.duration_since(e.window_start) < window
            });
            // Still too many (keys an attacker makes up, such as user names or IPv6
            // addresses): forget the counts, keep the blocks, so memory stays bounded.
            if entries.len() >= MAX_TRACKED {
                entries.retain(|_, e| e.blocked_until.is_some_and(|u| u > now));
            }
        }
        let entry = entries.entry(key).or_insert(Entry {
            window_start: now,
            unknown: 0,
            blocked_until: None,
        });
        if now.duration_since(entry.window_start) >= self.window {
            entry.window_start = now;
            entry.unknown = 0;
        }
        entry.unknown += 1;
        if entry.unknown >= self.limit {
            entry.blocked_until = Some(now + self.block);
            entry.unknown = 0;
            entry.window_start = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_at_the_limit_and_blocks_only_that_ip() {
        let guard = DictionaryGuard::new(3, Duration::from_secs(60), Duration::from_secs(60));
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!guard.record_failure(bad));
        assert!(!guard.record_failure(bad));
        assert!(!guard.is_blocked(&bad));
        assert!(guard.record_failure(bad));
        assert!(guard.is_blocked(&bad));
        assert!(!guard.is_blocked(&good));
    }

    #[test]
    fn the_window_forgets_old_misses_and_the_block_ends() {
        let guard = DictionaryGuard::new(2, Duration::from_millis(20), Duration::from_millis(20));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!guard.record_failure(ip));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !guard.record_failure(ip),
            "the first miss is outside the window"
        );
        assert!(guard.record_failure(ip));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!guard.is_blocked(&ip));
    }
}
