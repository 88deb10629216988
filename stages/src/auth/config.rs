//! The `[stages.auth]` section: which resolver the SPF, DKIM and DMARC checks ask, and
//! how long they may take.

use std::net::SocketAddr;

use serde::Deserialize;

/// The `[stages.auth]` section.
///
/// ```toml
/// [stages.auth]
/// resolver = "127.0.0.1:53"   # optional; the system resolver otherwise
/// timeout_ms = 5000           # all checks of one message together
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The DNS server to ask, as `ip:port`, over UDP (and TCP for truncated answers).
    /// Without it the system resolver (`/etc/resolv.conf`) is used. SPF alone may take
    /// ten lookups per message, so an ISP points this at its own caching resolver.
    pub resolver: Option<SocketAddr>,
    /// How long the checks of one message may take in all, in milliseconds: SPF and
    /// DKIM run side by side, then DMARC gets what is left. A check that runs out of
    /// time gives a `*_TEMPERROR` tag, never a stage error, so a DNS outage does not
    /// hold mail back.
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            resolver: None,
            // SPF may chain up to ten lookups (RFC 7208 §4.6.4); through a warm local
            // cache they take milliseconds, and a cold chain rarely needs more than a
            // few seconds.
            timeout_ms: 5000,
        }
    }
}
