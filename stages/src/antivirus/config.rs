//! The `[stages.antivirus]` section and the clamd address it names.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::Deserialize;

use super::AntivirusError;

/// The `[stages.antivirus]` section.
///
/// ```toml
/// [stages.antivirus]
/// clamd = "tcp://127.0.0.1:3310"     # or "unix:///run/clamav/clamd.ctl"
/// timeout = "30s"
/// max_scan_bytes = 26214400
/// oversize = "skip"                  # or "tempfail"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusConfig {
    /// Where clamd listens: `tcp://HOST:PORT` or `unix:///PATH` (Debian's clamd listens
    /// on `unix:///run/clamav/clamd.ctl` only, unless `TCPSocket` is set). Checked by
    /// [`Antivirus::new`](super::Antivirus::new), so a typo stops startup.
    pub clamd: String,
    /// How long one scan may take from connecting to clamd until its answer, and how
    /// long a readiness ping may take. A scan that takes longer fails as transient and
    /// is retried later.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest message, in bytes, that is sent to clamd. It must not exceed clamd's
    /// `StreamMaxLength`: clamd refuses a longer stream with `INSTREAM size limit
    /// exceeded`, which the stage treats as a clamd error, so such mail would be retried
    /// and end in `dead.antivirus`. Larger mail is handled as `oversize` says.
    pub max_scan_bytes: u64,
    /// What to do with a message larger than `max_scan_bytes`.
    pub oversize: Oversize,
}

impl Default for AntivirusConfig {
    fn default() -> Self {
        AntivirusConfig {
            clamd: "tcp://127.0.0.1:3310".to_owned(),
            timeout: Duration::from_secs(30),
            // clamd's own default StreamMaxLength (25M).
            max_scan_bytes: 25 * 1024 * 1024,
            oversize: Oversize::Skip,
        }
    }
}

/// What the stage does with a message larger than `max_scan_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Pass it on unscanned, tagged `AV_NOT_SCANNED_TOO_LARGE` with its size as
    /// evidence, so `score` (and people reading the log) know it was not scanned.
    /// Sending it anyway is useless: clamd would stop reading at `StreamMaxLength` and
    /// answer `INSTREAM size limit exceeded`, never a verdict, and no retry can change
    /// that.
    #[default]
    Skip,
    /// Fail it as transient: the runner retries with backoff and, after its last try,
    /// puts it in `dead.antivirus`, where `pampa dead retry` re-queues it once the limits
    /// are raised. For sites where no mail may pass unscanned.
    Tempfail,
}

impl Oversize {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Oversize::Skip => "skip",
            Oversize::Tempfail => "tempfail",
        }
    }
}

/// Where clamd listens, parsed from [`AntivirusConfig::clamd`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClamdAddress {
    /// `tcp://HOST:PORT`: a host name or IP address (IPv6 in brackets) and a port.
    Tcp {
        /// The host name or IP address, without brackets.
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// `unix:///PATH`: a unix socket at an absolute path.
    Unix(PathBuf),
}

impl FromStr for ClamdAddress {
    type Err = AntivirusError;

    fn from_str(address: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &'static str| AntivirusError::BadAddress {
            address: address.to_owned(),
            reason,
        };
        if let Some(rest) = address.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("a tcp address needs a port (tcp://HOST:PORT)"))?;
            let host = match host.strip_prefix('[') {
                Some(inner) => inner
                    .strip_suffix(']')
                    .ok_or_else(|| bad("an IPv6 address must be in brackets: tcp://[::1]:3310"))?,
                None if host.contains(':') => {
                    return Err(bad("an IPv6 address must be in brackets: tcp://[::1]:3310"))
                }
                None => host,
            };
            if host.is_empty() {
                return Err(bad("the host is empty"));
            }
            if host.contains(['/', '@', '?', '#']) {
                return Err(bad("a tcp address is only tcp://HOST:PORT"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
            if port == 0 {
                return Err(bad("the port is not a number from 1 to 65535"));
            }
            Ok(ClamdAddress::Tcp {
                host: host.to_owned(),
                port,
            })
        } else if let Some(path) = address.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a unix socket path must be absolute: unix:///run/clamav/clamd.ctl",
                ));
            }
            Ok(ClamdAddress::Unix(PathBuf::from(path)))
        } else {
            Err(bad("it must be tcp://HOST:PORT or unix:///PATH"))
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            ClamdAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ClamdAddress::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}
