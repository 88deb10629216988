//! The `[relay]` section of the configuration.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;

/// How the relay reaches the internet and how patient it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The name said in EHLO and in DSNs (`MAILER-DAEMON@hostname`). It should be the
    /// PTR name of the relay's public address, or remote MXs will score the mail.
    pub hostname: String,
    /// The DNS server MX and address lookups ask; unset: the ones in
    /// `/etc/resolv.conf`.
    pub nameserver: Option<SocketAddr>,
    /// The TCP port of remote MXs: 25, except in tests.
    pub smtp_port: u16,
    /// Next hops that replace the MX lookup for some domains, as Postfix's
    /// `transport_maps` do: `"example.org" = "10.0.0.25:25"` sends that domain's mail
    /// straight to the ISP's own MX, `"*" = "smarthost.example.net"` sends
    /// everything else through one host (on port 25, without AUTH: the relay has no
    /// SMTP AUTH client). A host name is looked up as an A/AAAA name,
    /// never as an MX.
    pub routes: BTreeMap<String, String>,
    /// Each DNS query gives up after this long.
    #[serde(with = "humantime_serde")]
    pub dns_timeout: Duration,
    /// Connecting to one MX address gives up after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Each SMTP reply must come within this long (RFC 5321 §4.5.3.2 asks for minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Whether to use STARTTLS when the remote offers it. Certificates are not
    /// checked (opportunistic TLS, as MTAs do without DANE or MTA-STS): it protects
    /// against listening, not against an active attacker.
    pub starttls: bool,
    /// The wait after the first failed attempt; it doubles after each one.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// The longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A recipient still failing this long after it was queued is bounced.
    #[serde(with = "humantime_serde")]
    pub queue_lifetime: Duration,
    /// Most attempts in flight to one destination domain, so pampa is a polite sender.
    pub max_per_domain: usize,
    /// Most attempts in flight in all.
    pub max_concurrent: usize,
    /// How often the queue is polled for due recipients (new mail wakes it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            hostname: pampa_ingest::config::default_hostname(),
            nameserver: None,
            smtp_port: 25,
            routes: BTreeMap::new(),
            dns_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            starttls: true,
            retry_base: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            max_per_domain: 4,
            max_concurrent: 32,
            poll_interval: Duration::from_secs(5),
        }
    }
}

impl RelayConfig {
    /// Checks what the types cannot: every route names a host and, if any, a port.
    pub fn validate(&self) -> Result<(), String> {
        for (domain, hop) in &self.routes {
            let bad = |why: &str| Err(format!("relay.routes.{domain:?} = {hop:?}: {why}"));
            if hop.trim().is_empty() || hop.contains(char::is_whitespace) {
                return bad("name a host, as host or host:port");
            }
            if let Some((host, port)) = hop.rsplit_once(':') {
                // [v6]:port or host:port; a bare v6 address has more colons.
                let v6_bare = host.contains(':') && !host.starts_with('[');
                if !v6_bare && port.parse::<u16>().map_or(true, |p| p == 0) {
                    return bad("the port must be a number from 1 to 65535");
                }
            }
        }
        Ok(())
    }

    /// The fixed next hop of `domain` (its own route, or the `*` one): host and port.
    pub fn route(&self, domain: &str) -> Option<(String, u16)> {
        let hop = self
            .routes
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .map(|(_, hop)| hop)
            .or_else(|| self.routes.get("*"))?;
        match hop.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => Some((
                host.trim_matches(['[', ']']).to_owned(),
                port.parse().unwrap_or(self.smtp_port),
            )),
            _ => Some((hop.trim_matches(['[', ']']).to_owned(), self.smtp_port)),
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.retry_base
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }

    /// How long a lease on a recipient lasts: longer than any one attempt can take
    /// (DNS, connecting to a few MXs, and the session's replies).
    pub fn lease(&self) -> Duration {
        self.dns_timeout * 2 + self.connect_timeout * 4 + self.command_timeout * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_a_host_and_maybe_a_port() {
        let mut config = RelayConfig::default();
        config
            .routes
            .insert("example.org".into(), "10.0.0.25:2525".into());
        config
            .routes
            .insert("*".into(), "smarthost.example.net".into());
        assert_eq!(
            config.route("example.org"),
            Some(("10.0.0.25".into(), 2525))
        );
        assert_eq!(
            config.route("other.test"),
            Some(("smarthost.example.net".into(), 25))
        );
        config.routes.clear();
        config
            .routes
            .insert("v6.test".into(), "[2001:db8::1]:26".into());
        assert_eq!(config.route("v6.test"), Some(("2001:db8::1".into(), 26)));
        assert_eq!(config.route("none.test"), None);
        assert_eq!(config.route("V6.TEST"), Some(("2001:db8::1".into(), 26)));
        assert!(config.validate().is_ok());
        config
            .routes
            .insert("bad.test".into(), "10.0.0.1:2x".into());
        assert!(config.validate().unwrap_err().contains("port"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = RelayConfig {
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(600),
            ..RelayConfig::default()
        };
        assert_eq!(config.backoff(1), Duration::from_secs(60));
        assert_eq!(config.backoff(2), Duration::from_secs(120));
        assert_eq!(config.backoff(4), Duration::from_secs(480));
        assert_eq!(config.backoff(5), Duration::from_secs(600));
        assert_eq!(config.backoff(400), Duration::from_secs(600));
    }
}
