//! The per-IP connection rate limit, with governor (GCRA): a client that reconnects in a
//! tight loop is turned away with `421` before it costs a session, a TLS handshake or a
//! directory lookup. The concurrent caps in `server.rs` bound what a client *holds*;
//! this bounds how *often* it may come back.

use std::{net::IpAddr, num::NonZeroU32};

use governor::{clock::DefaultClock, state::keyed::HashMapStateStore, Quota, RateLimiter};

/// Checks the rate per client address. Memory grows with the addresses seen in the
/// last period only: [`ConnectionRate::check`] forgets the idle ones now and then.
pub(crate) struct ConnectionRate {
    limiter: Option<RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>>,
    checks: std::sync::atomic::AtomicU32,
}

/// Every this many checks, addresses whose state is back to idle are dropped.
const FORGET_EVERY: u32 = 4096;

impl ConnectionRate {
    /// `per_minute` connections a minute from one address, all of which may come at
    /// once (governor's burst); zero turns the limit off.
    pub(crate) fn new(per_minute: u32) -> Self {
        ConnectionRate {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::hashmap(Quota::per_minute(n))),
            checks: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Whether a new connection from `ip` is within its rate (and counts it if so).
    pub(crate) fn check(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % FORGET_EVERY == FORGET_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&ip).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_rate_is_refused_per_address() {
        let rate = ConnectionRate::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!((0..3).all(|_| rate.check(a)));
        assert!(
            !rate.check(a),
            "the fourth within a minute is over the rate"
        );
        assert!(rate.check(b), "another address has its own allowance");
        let off = ConnectionRate::new(0);
        assert!((0..10_000).all(|_| off.check(a)));
    }
}
