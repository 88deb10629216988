//! Response-rate limiting for UDP answers, in the manner of BIND's RRL.
//!
//! Clients are grouped by network (a /24 for IPv4, a /56 for IPv6) because an attacker
//! forging sources spreads them over a network, and counted in one-second windows.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Instant};

use crate::config::RateLimitConfig;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Send,
    /// Send it truncated (TC, no records), so a real client retries over TCP.
    Slip,
    /// Do not send it.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    second: u64,
    count: u32,
    limited: u32,
}

pub(crate) struct RateLimiter {
    per_second: u32,
    slip: u32,
    table_size: usize,
    epoch: Instant,
    table: Mutex<HashMap<IpAddr, Window>>,
}

impl RateLimiter {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        RateLimiter {
            per_second: config.responses_per_second,
            slip: config.slip,
            table_size: config.table_size.max(1),
            epoch: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.per_second > 0
    }

    /// Counts one response to `client` and says whether it may be sent.
    pub(crate) fn check(&self, client: IpAddr) -> Verdict {
        if !self.enabled() {
            return Verdict::Send;
        }
        self.check_at(client, self.epoch.elapsed().as_secs())
    }

    fn check_at(&self, client: IpAddr, second: u64) -> Verdict {
        let key = network_of(client);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= self.table_size && !table.contains_key(&key) {
            // Windows older than this second carry no state worth keeping.
            table.retain(|_, w| w.second == second);
            if table.len() >= self.table_size {
                // Under a flood of distinct networks: forget them all rather than
                // grow; each gets a fresh window, which errs toward answering.
                table.clear();
            }
        }
        let w = table.entry(key).or_insert(Window {
            second,
            count: 0,
            limited: 0,
        });
        if w.second != second {
            *w = Window {
                second,
                count: 0,
                limited: 0,
            };
        }
        w.count = w.count.saturating_add(1);
        if w.count <= self.per_second {
            return Verdict::Send;
        }
        w.limited = w.limited.saturating_add(1);
        if self.slip > 0 && w.limited.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[7..].fill(0);
            IpAddr::from(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_network_and_slips() {
        let rrl = RateLimiter::new(&RateLimitConfig {
            responses_per_second: 3,
            slip: 2,
            exempt_recursion_clients: false,
            table_size: 10,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.77".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..3).map(|_| rrl.check_at(a, 7)).collect();
        assert!(verdicts.iter().all(|v| *v == Verdict::Send));
        assert_eq!(rrl.check_at(b, 7), Verdict::Drop, "same /24");
        assert_eq!(rrl.check_at(a, 7), Verdict::Slip);
        assert_eq!(rrl.check_at(other, 7), Verdict::Send);
        assert_eq!(rrl.check_at(a, 8), Verdict::Send, "a new second");
    }
}
