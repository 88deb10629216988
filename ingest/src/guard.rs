//! The dictionary-attack defence: a client IP that names too many unknown recipients
//! within a window is refused for a while, so nobody can harvest the user list.
//!
//! The state is per ingest process and in memory: an attacker spread over several MX
//! processes gets a few more guesses, which is acceptable for a rate limit.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

struct Entry {
    window_start: Instant,
    unknown: u32,
    blocked_until: Option<Instant>,
}

/// Counts unknown recipients per client IP.
pub(crate) struct DictionaryGuard {
    limit: u32,
    window: Duration,
    block: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// Above this many tracked IPs, stale entries are swept on the next update.
const SWEEP_AT: usize = 10_000;

impl DictionaryGuard {
    pub(crate) fn new(limit: u32, window: Duration, block: Duration) -> Self {
        DictionaryGuard {
            limit: limit.max(1),
            window,
            block,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is refused right now.
    pub(crate) fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&ip)
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// Records one unknown recipient; returns true when this one trips the limit.
    pub(crate) fn record_unknown(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_AT {
            let (window, _) = (self.window, self.block);
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now)
                    || now.duration_since(e.window_start) < window
            });
        }
        let entry = entries.entry(ip).or_insert(Entry {
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
        assert!(!guard.record_unknown(bad));
        assert!(!guard.record_unknown(bad));
        assert!(!guard.is_blocked(bad));
        assert!(guard.record_unknown(bad));
        assert!(guard.is_blocked(bad));
        assert!(!guard.is_blocked(good));
    }

    #[test]
    fn the_window_forgets_old_misses_and_the_block_ends() {
        let guard = DictionaryGuard::new(2, Duration::from_millis(20), Duration::from_millis(20));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!guard.record_unknown(ip));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !guard.record_unknown(ip),
            "the first miss is outside the window"
        );
        assert!(guard.record_unknown(ip));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!guard.is_blocked(ip));
    }
}
