//! What a list is asked about, and the DNS name that asks it (RFC 5782).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// One thing looked up on a list: an IP address or a registrable domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// Queried reversed: `2.0.0.127.<zone>`.
    Ip(IpAddr),
    /// Queried as is: `example.com.<zone>`. Lower case ASCII (IDNs in punycode).
    Domain(String),
}

impl Target {
    /// The name to query on `zone` (without the trailing dot).
    pub(crate) fn query_name(&self, zone: &str) -> String {
        match self {
            Target::Ip(ip) => format!("{}.{zone}", reverse_ip(*ip)),
            Target::Domain(domain) => format!("{domain}.{zone}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(ip) => ip.fmt(f),
            Target::Domain(domain) => f.write_str(domain),
        }
    }
}

/// An IP address in the reversed form DNS blocklists are queried with (RFC 5782 §2.1,
/// §2.4): `192.0.2.1` becomes `1.2.0.192`; an IPv6 address becomes its 32 nibbles in
/// reverse order, dot-separated, as in `ip6.arpa`.
pub fn reverse_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => reverse_v6(v6),
    }
}

fn reverse_v6(v6: Ipv6Addr) -> String {
    let mut out = String::with_capacity(63);
    for byte in v6.octets().iter().rev() {
        for nibble in [byte & 0x0f, byte >> 4] {
            if !out.is_empty() {
                out.push('.');
            }
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

/// The client IP as ingest recorded it (text), as an address. IPv4-mapped IPv6
/// (`::ffff:192.0.2.1`, what a dual-stack listener reports) becomes plain IPv4, since
/// that is how lists know it. Brackets are tolerated.
pub(crate) fn parse_client_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
