//! The `[smtp]` section of the configuration.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// How the MX listens and what it tolerates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Address and port to listen on (`0.0.0.0:25` in production).
    pub listen: String,
    /// The name announced in the greeting, EHLO and `Received:` headers.
    pub hostname: String,
    /// Largest message accepted, in bytes; also advertised as `SIZE`.
    pub max_message_bytes: usize,
    /// Most recipients in one transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command line, in bytes, including CRLF; longer gets `500 5.5.2`.
    pub max_line_length: usize,
    /// Most commands in one session before it is closed with 421.
    pub max_commands: usize,
    /// Most erroneous commands in one session before it is closed with 421.
    pub max_errors: usize,
    /// A silent client is dropped with 421 after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Dictionary-attack defence: this many unknown recipients from one IP ...
    pub unknown_recipient_limit: u32,
    /// ... within this window get that IP refused ...
    #[serde(with = "humantime_serde")]
    pub unknown_recipient_window: Duration,
    /// ... for this long.
    #[serde(with = "humantime_serde")]
    pub unknown_recipient_block: Duration,
    /// Separator of `user+detail@domain`; mail to such an address goes to `user`.
    pub recipient_delimiter: Option<char>,
    /// PEM certificate chain; with `tls_key`, STARTTLS is offered.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Most SMTP sessions open at once; more are answered `421 4.3.2` and closed, so
    /// a flood of slow clients cannot exhaust the process.
    pub max_connections: usize,
    /// Most sessions open at once from one IP address; more get `421 4.7.0`, so one
    /// slow-loris client holds no more than its share.
    pub max_connections_per_ip: usize,
    /// Most new connections a minute from one IP address (0: no limit); past it the
    /// client gets `421 4.7.0` at once. Senders that open a session per message stay far
    /// below the default; a client reconnecting in a loop does not.
    pub max_connection_rate_per_ip: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: "127.0.0.1:2525".to_owned(),
            hostname: default_hostname(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 1000,
            max_commands: 1000,
            max_errors: 20,
            idle_timeout: Duration::from_secs(300),
            unknown_recipient_limit: 10,
            unknown_recipient_window: Duration::from_secs(600),
            unknown_recipient_block: Duration::from_secs(1800),
            recipient_delimiter: Some('+'),
            tls_cert: None,
            tls_key: None,
            max_connections: 2000,
            max_connections_per_ip: 20,
            max_connection_rate_per_ip: 600,
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), or `localhost`: the name
/// pampa's SMTP roles announce unless configured.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
