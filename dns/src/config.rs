//! The `[dns]` section of the configuration.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use crate::DnsError;

/// How the DNS server listens, what it serves, and whom it resolves for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Address for both UDP and TCP (`0.0.0.0:53` in production).
    pub listen: String,
    /// Client networks (CIDRs, or bare addresses) that may use recursion. Everyone else
    /// gets REFUSED for names outside pampa's own zones, so pampa is no open resolver.
    /// Authoritative and DNSBL answers go to everyone.
    pub recursion_allowed: Vec<String>,
    /// Upstream resolvers (`9.9.9.9` or `10.0.0.53:5353`) to forward recursive queries
    /// to. Empty: full recursion from the root servers.
    pub forwarders: Vec<String>,
    /// Authoritative zones, from RFC 1035 master files.
    pub zones: Vec<ZoneConfig>,
    /// DNSBL mirror zones, from rbldnsd dataset files.
    pub dnsbl: Vec<DnsblConfig>,
    /// Most answers kept in the recursion cache; the oldest go first.
    pub cache_size: usize,
    /// Most recursive resolutions in flight at once; beyond that clients get SERVFAIL
    /// at once rather than piling up behind a slow upstream.
    pub max_recursive_in_flight: usize,
    /// How long one recursive resolution may take before SERVFAIL.
    #[serde(with = "humantime_serde")]
    pub recursion_timeout: Duration,
    /// The largest UDP response pampa sends to an EDNS client, whatever the client
    /// offers. 1232 avoids IP fragmentation on any path (the DNS Flag Day 2020 value).
    pub max_udp_payload: u16,
    /// How often the DNSBL dataset files are checked for a new modification time.
    #[serde(with = "humantime_serde")]
    pub dnsbl_poll_interval: Duration,
    /// Most `dns.query` events waiting to be published; beyond that they are dropped
    /// and counted in `pampa_dns_query_log_dropped_total`, so logging never slows
    /// answers.
    pub query_log_queue: usize,
    /// Whether to write a `dns.query` event per query at all.
    pub query_log: bool,
    /// Idle TCP connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Most TCP connections open at once; more are closed at once.
    pub max_tcp_connections: usize,
    /// The per-client response-rate limit for UDP answers.
    pub rate_limit: RateLimitConfig,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: "127.0.0.1:5353".to_owned(),
            recursion_allowed: vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            forwarders: Vec::new(),
            zones: Vec::new(),
            dnsbl: Vec::new(),
            cache_size: 100_000,
            max_recursive_in_flight: 4096,
            recursion_timeout: Duration::from_secs(5),
            max_udp_payload: 1232,
            dnsbl_poll_interval: Duration::from_secs(2),
            query_log_queue: 65_536,
            query_log: true,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 1024,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// `[[dns.zones]]`: one authoritative zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's apex (`example.net`); the file's records must lie under it.
    pub name: String,
    /// The RFC 1035 master file. `$ORIGIN` defaults to `name`.
    pub file: PathBuf,
}

/// `[[dns.dnsbl]]`: one DNSBL mirror zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblConfig {
    /// The zone's apex (`bl.example.net`).
    pub name: String,
    /// The rbldnsd dataset file. It is reloaded when its modification time changes.
    pub file: PathBuf,
    /// The dataset format.
    pub format: DnsblFormat,
}

/// rbldnsd dataset formats pampa reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblFormat {
    /// IPv4 addresses, prefixes, CIDR and ranges, queried as reversed octets
    /// (`2.0.0.127.zone`).
    Ip4set,
    /// IPv4 CIDR, longest prefix wins.
    Ip4trie,
    /// IPv6 CIDR, longest prefix wins, queried as 32 reversed nibbles.
    Ip6trie,
    /// Domain names and wildcard subdomains, queried as the name (`spam.example.com.zone`).
    Dnset,
}

/// `[dns.rate_limit]`: response-rate limiting (RRL) over UDP, as BIND does it.
///
/// UDP source addresses can be forged, so a server answering big responses to anyone
/// can be used to flood a victim. Responses to one client network (a /24 for IPv4, a
/// /56 for IPv6) beyond `responses_per_second` are dropped, except that every
/// `slip`-th one is sent truncated, so a real client retries over TCP (where the
/// address cannot be forged) instead of timing out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// UDP responses per second to one client network; 0 turns the limit off.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated instead of dropped; 0 drops
    /// them all, 1 truncates them all.
    pub slip: u32,
    /// Whether clients in `recursion_allowed` (the ISP's own subscribers) are exempt.
    pub exempt_recursion_clients: bool,
    /// Most client networks tracked; when full, the oldest windows are forgotten.
    pub table_size: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            responses_per_second: 100,
            slip: 2,
            exempt_recursion_clients: true,
            table_size: 100_000,
        }
    }
}

impl DnsConfig {
    /// `recursion_allowed`, parsed. A bare address means just that host.
    pub fn recursion_networks(&self) -> Result<Vec<IpNet>, DnsError> {
        self.recursion_allowed
            .iter()
            .map(|s| {
                parse_net(s).ok_or_else(|| {
                    DnsError::Config(format!("dns.recursion_allowed: {s:?} is not a CIDR"))
                })
            })
            .collect()
    }

    /// `forwarders`, parsed: an address with an optional port (53 by default).
    pub fn forwarder_addrs(&self) -> Result<Vec<std::net::SocketAddr>, DnsError> {
        self.forwarders
            .iter()
            .map(|s| {
                if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
                    Ok(addr)
                } else if let Ok(ip) = s.parse::<IpAddr>() {
                    Ok(std::net::SocketAddr::new(ip, 53))
                } else {
                    Err(DnsError::Config(format!(
                        "dns.forwarders: {s:?} is not an address (1.2.3.4, 1.2.3.4:53 or [::1]:53)"
                    )))
                }
            })
            .collect()
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_like: Vec<(&str, &str)>) -> Result<DnsConfig, serde::de::value::Error> {
        DnsConfig::deserialize(serde::de::value::MapDeserializer::<
            _,
            serde::de::value::Error,
        >::new(
            toml_like
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ))
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c = parse(vec![]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:5353");
        assert!(c.forwarders.is_empty());
        assert_eq!(c.recursion_networks().unwrap().len(), 2);
        assert!(parse(vec![("lisen", "x")]).is_err());
    }

    #[test]
    fn networks_and_forwarders_parse() {
        let c = DnsConfig {
            recursion_allowed: vec![
                "10.0.0.0/8".into(),
                "192.0.2.1".into(),
                "2001:db8::/32".into(),
            ],
            forwarders: vec!["9.9.9.9".into(), "127.0.0.1:5300".into(), "[::1]:53".into()],
            ..DnsConfig::default()
        };
        let nets = c.recursion_networks().unwrap();
        assert!(nets[1].contains(&"192.0.2.1".parse::<IpAddr>().unwrap()));
        let f = c.forwarder_addrs().unwrap();
        assert_eq!(f[0].port(), 53);
        assert_eq!(f[1].port(), 5300);
        let bad = DnsConfig {
            recursion_allowed: vec!["10.0.0.0/33".into()],
            ..DnsConfig::default()
        };
        assert!(bad.recursion_networks().is_err());
    }
}
