//! The `[submission]` section of the configuration.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// How the submission role listens, whom it lets send, and how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Address and port with STARTTLS (`0.0.0.0:587` in production).
    pub listen: String,
    /// Address and port with implicit TLS (`0.0.0.0:465` in production); empty: none.
    pub tls_listen: String,
    /// The name announced in the greeting, EHLO and `Received:` headers.
    pub hostname: String,
    /// PEM certificate chain. Submission needs one: AUTH is offered only inside TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Largest message accepted, in bytes; also advertised as `SIZE`.
    pub max_message_bytes: usize,
    /// Most recipients in one transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command line, in bytes, including CRLF. RFC 4954 §4 asks for 12288, so
    /// an AUTH line with a long initial response fits.
    pub max_line_length: usize,
    /// Most commands in one session before it is closed with 421.
    pub max_commands: usize,
    /// Most erroneous commands (failed AUTH included) before the session is closed.
    pub max_errors: usize,
    /// A silent client is dropped with 421 after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most sessions open at once; more get `421 4.3.2`.
    pub max_connections: usize,
    /// Most sessions open at once from one client address (an IPv6 /64); more get
    /// `421 4.7.0`, so one host cannot hold every slot.
    pub max_connections_per_ip: usize,
    /// Failed AUTH attempts from one IP within `auth_failure_window` before that IP is
    /// locked out for `auth_lockout`.
    pub auth_failures_per_ip: u32,
    /// Failed AUTH attempts for one user (from anywhere) within `auth_failure_window`
    /// before that user is locked out for `auth_lockout`.
    pub auth_failures_per_user: u32,
    /// The window failed AUTH attempts are counted in.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// How long a lockout lasts.
    #[serde(with = "humantime_serde")]
    pub auth_lockout: Duration,
    /// Messages an hour per user, unless the directory sets the user's own
    /// (`pampa user limits`).
    pub messages_per_hour: u32,
    /// Recipients an hour per user, unless the directory sets the user's own.
    pub recipients_per_hour: u32,
    /// Messages an hour from one client IP, whoever authenticates (0: no limit).
    pub ip_messages_per_hour: u32,
    /// Outbound mail scoring this or more is held, not sent, and its sender flagged.
    pub hold_score: f64,
    /// Whether a flagged user may go on sending. Off by default: a flag most often
    /// means a stolen password, and every message sent meanwhile hurts the IP's
    /// reputation. `pampa user unflag` lifts it.
    pub flagged_may_send: bool,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            listen: "127.0.0.1:5587".to_owned(),
            tls_listen: "127.0.0.1:5465".to_owned(),
            hostname: pampa_ingest::config::default_hostname(),
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 12288,
            max_commands: 1000,
            max_errors: 10,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1000,
            max_connections_per_ip: 20,
            auth_failures_per_ip: 10,
            auth_failures_per_user: 5,
            auth_failure_window: Duration::from_secs(900),
            auth_lockout: Duration::from_secs(900),
            messages_per_hour: 200,
            recipients_per_hour: 500,
            ip_messages_per_hour: 2000,
            hold_score: 5.0,
            flagged_may_send: false,
        }
    }
}
