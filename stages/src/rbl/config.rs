//! The `[stages.rbl]` section: which DNS blocklists to ask, how, and what a listing
//! weighs.

use std::{collections::BTreeMap, net::Ipv4Addr, net::SocketAddr, time::Duration};

use serde::Deserialize;

/// The `[stages.rbl]` section.
///
/// ```toml
/// [stages.rbl]
/// resolver = "127.0.0.1:5353"        # optional; the system resolver otherwise
/// timeout_ms = 1500                  # per lookup
/// [[stages.rbl.lists]]
/// zone = "zen.example"               # queried as <reversed-ip>.zen.example
/// kind = "ip"                        # "ip" (client IP) or "uri" (body domains)
/// weights = { "127.0.0.2" = 4.0, "127.0.0.4" = 3.0 }
/// default_weight = 1.0
/// errors = ["127.255.255.252", "127.255.255.254", "127.255.255.255"]
/// tag = "RBL_ZEN"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RblConfig {
    /// The DNS server to ask, as `ip:port`, over UDP (and TCP for truncated answers).
    /// Without it the system resolver (`/etc/resolv.conf`) is used. Public blocklists
    /// often refuse queries that come through big public resolvers, so an ISP points
    /// this at its own caching resolver or a local rbldnsd mirror.
    pub resolver: Option<SocketAddr>,
    /// How long one lookup may take, in milliseconds. A lookup that takes longer counts
    /// as "unknown": no tag, and the message moves on. This also bounds how long a
    /// message waits for the first health probe.
    pub timeout_ms: u64,
    /// How often every list's health is probed (RFC 5782 test entries), such as `"60s"`.
    /// A list that was disabled for listing the world is enabled again by the first
    /// probe that finds it sane.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// At most this many distinct body domains (and IP-literal hosts) are looked up per
    /// message, in the order they first appear, so that a message stuffed with links
    /// cannot fan out into thousands of queries.
    pub max_uri_domains: usize,
    /// The lists to ask, in the order their tags are reported.
    pub lists: Vec<ListConfig>,
}

impl Default for RblConfig {
    fn default() -> Self {
        RblConfig {
            resolver: None,
            timeout_ms: 1500,
            probe_interval: Duration::from_secs(60),
            // SpamAssassin's URIDNSBL plugin stops at 20 domains too.
            max_uri_domains: 20,
            // No list by default: each list has its own terms of use, so an operator
            // chooses them.
            lists: Vec::new(),
        }
    }
}

/// What a list is asked about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// The SMTP client's IP address, reversed (`2.0.0.127.zen.example`).
    #[default]
    Ip,
    /// The registrable domains of the links in the body (`example.com.dbl.example`);
    /// links to an IP address are asked in reversed form.
    Uri,
}

/// One `[[stages.rbl.lists]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The list's DNS zone, such as `zen.example`: a query is `<item>.<zone>`.
    pub zone: String,
    /// Whether the list holds client IPs or body domains.
    #[serde(default)]
    pub kind: ListKind,
    /// Weight per return code (`"127.0.0.2" = 4.0`). A code not named here weighs
    /// `default_weight`.
    #[serde(default)]
    pub weights: BTreeMap<Ipv4Addr, f64>,
    /// Weight of a return code that `weights` does not name.
    #[serde(default = "default_weight")]
    pub default_weight: f64,
    /// Return codes that mean "the list refuses to answer" (over quota, public
    /// resolver blocked, …) rather than "listed": never a hit, only counted. Codes
    /// outside 127.0.0.0/8 are always treated so (RFC 5782 §2.3 keeps real answers
    /// there; anything else is usually a parked domain's wildcard).
    #[serde(default)]
    pub errors: Vec<Ipv4Addr>,
    /// The tag's name. Defaults to `RBL_` (ip lists) or `URIBL_` (uri lists) followed
    /// by the zone in upper case, dots as underscores: `RBL_ZEN_EXAMPLE`.
    #[serde(default)]
    pub tag: Option<String>,
}

fn default_weight() -> f64 {
    1.0
}

impl ListConfig {
    /// A list of `kind` for `zone`, with every other setting at its default.
    pub fn new(zone: impl Into<String>, kind: ListKind) -> Self {
        ListConfig {
            zone: zone.into(),
            kind,
            weights: BTreeMap::new(),
            default_weight: default_weight(),
            errors: Vec::new(),
            tag: None,
        }
    }

    /// The tag name this list's hits carry: `tag`, or one derived from the zone.
    pub fn tag_name(&self) -> String {
        if let Some(tag) = &self.tag {
            return tag.clone();
        }
        let prefix = match self.kind {
            ListKind::Ip => "RBL_",
            ListKind::Uri => "URIBL_",
        };
        let zone: String = normalize_zone(&self.zone)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{prefix}{zone}")
    }
}

/// A zone as it is queried: lower case, without a trailing dot.
pub(crate) fn normalize_zone(zone: &str) -> String {
    zone.trim().trim_end_matches('.').to_ascii_lowercase()
}
