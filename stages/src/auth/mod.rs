//! The `auth` stage: SPF, DKIM and DMARC results as message tags, checked with the
//! `mail-auth` crate against the resolver in config.
//!
//! - SPF checks the MAIL FROM identity for the client IP (RFC 7208); a null sender
//!   (`<>`, bounces) has no MAIL FROM domain, so the HELO identity is checked instead.
//! - DKIM verifies every `DKIM-Signature` of the message (RFC 6376).
//! - DMARC looks up the policy of the `From:` domain and checks that a passing SPF or
//!   DKIM result is aligned with it (RFC 7489). A failure is tagged with the policy the
//!   domain asks for, so `score` can weigh `p=reject` above `p=none`.
//! - Every result is one message tag whose evidence names the identities checked. A
//!   DNS failure or running out of `timeout_ms` gives a `*_TEMPERROR` tag and a count in
//!   [`STAGE_ERRORS_TOTAL`]; it never fails the stage, because an unreachable resolver
//!   must not hold mail back or dead-letter it.
//!
//! Tags carry no weight of their own; `score` weighs them from its configuration, with
//! [`DEFAULT_AUTH_WEIGHTS`] as the suggested defaults.
//!
//! # Layout
//! - `mod.rs`: [`Auth`], its errors, tags and the checks.
//! - `config.rs`: [`AuthConfig`].

mod config;

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    config::{NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, NetError},
    Resolver, ResolverBuilder, TokioResolver,
};
use mail_auth::{
    dmarc::{verify::DmarcParameters, Policy},
    spf::verify::SpfParameters,
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
use pampa_schemas::{MailAnalysis, Tag};
use tokio::time::Instant;

pub use config::AuthConfig;

use crate::{metrics::STAGE_ERRORS_TOTAL, Body, Findings, Stage, StageError};

/// SPF: the client IP is authorized for the checked identity.
pub const SPF_PASS: &str = "SPF_PASS";
/// SPF: the domain says the client IP must not send for it (`-all`).
pub const SPF_FAIL: &str = "SPF_FAIL";
/// SPF: the domain says the client IP probably must not send for it (`~all`).
pub const SPF_SOFTFAIL: &str = "SPF_SOFTFAIL";
/// SPF: the domain makes no statement about the client IP (`?all`).
pub const SPF_NEUTRAL: &str = "SPF_NEUTRAL";
/// SPF: the domain publishes no SPF record, or there was no identity to check.
pub const SPF_NONE: &str = "SPF_NONE";
/// SPF: a DNS failure or timeout; the result is unknown.
pub const SPF_TEMPERROR: &str = "SPF_TEMPERROR";
/// SPF: the domain's record is broken (syntax, too many lookups).
pub const SPF_PERMERROR: &str = "SPF_PERMERROR";
/// DKIM: at least one signature verified.
pub const DKIM_VALID: &str = "DKIM_VALID";
/// DKIM: at least one signature did not verify (altered message, bad or missing key).
pub const DKIM_INVALID: &str = "DKIM_INVALID";
/// DKIM: the message carries no signature.
pub const DKIM_NONE: &str = "DKIM_NONE";
/// DKIM: a signature's key could not be fetched (DNS failure or timeout).
pub const DKIM_TEMPERROR: &str = "DKIM_TEMPERROR";
/// DMARC: an aligned SPF or DKIM pass.
pub const DMARC_PASS: &str = "DMARC_PASS";
/// DMARC: no aligned pass, and the `From:` domain asks to reject such mail.
pub const DMARC_FAIL_REJECT: &str = "DMARC_FAIL_REJECT";
/// DMARC: no aligned pass, and the `From:` domain asks to quarantine such mail.
pub const DMARC_FAIL_QUARANTINE: &str = "DMARC_FAIL_QUARANTINE";
/// DMARC: no aligned pass, and the `From:` domain only monitors (`p=none`).
pub const DMARC_FAIL_NONE: &str = "DMARC_FAIL_NONE";
/// DMARC: the `From:` domain publishes no policy, or there is no single `From:` domain.
pub const DMARC_NONE: &str = "DMARC_NONE";
/// DMARC: a DNS failure or timeout; the result is unknown.
pub const DMARC_TEMPERROR: &str = "DMARC_TEMPERROR";
/// DMARC: the policy record could not be used.
pub const DMARC_PERMERROR: &str = "DMARC_PERMERROR";

/// Suggested weights of the auth tags, for `score`'s defaults.
///
/// Authentication is weak evidence on its own: spammers publish SPF and sign with DKIM
/// too, and forwarding breaks SPF for honest mail. So passes only nudge the score down,
/// and failures weigh by how sure the domain owner is: a DMARC `p=reject` failure is the
/// owner saying "this is not us", which is strong evidence of spoofing. Unknown results
/// (`*_NONE`, `*_TEMPERROR`, `*_PERMERROR`, `DMARC_FAIL_NONE`) weigh nothing, so a DNS
/// outage never pushes ham into Spam.
pub const DEFAULT_AUTH_WEIGHTS: [(&str, f64); 18] = [
    (SPF_PASS, -0.1),
    (SPF_FAIL, 1.0),
    (SPF_SOFTFAIL, 0.5),
    (SPF_NEUTRAL, 0.0),
    (SPF_NONE, 0.0),
    (SPF_TEMPERROR, 0.0),
    (SPF_PERMERROR, 0.0),
    (DKIM_VALID, -0.1),
    (DKIM_INVALID, 0.5),
    (DKIM_NONE, 0.0),
    (DKIM_TEMPERROR, 0.0),
    (DMARC_PASS, -0.5),
    (DMARC_FAIL_REJECT, 3.0),
    (DMARC_FAIL_QUARANTINE, 2.0),
    (DMARC_FAIL_NONE, 0.0),
    (DMARC_NONE, 0.0),
    (DMARC_TEMPERROR, 0.0),
    (DMARC_PERMERROR, 0.0),
];

/// Why the auth stage could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A setting is out of range.
    #[error("auth setting {setting} is invalid: {reason}")]
    BadSetting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `resolver` is not set and the system resolver configuration is unreadable.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemResolver(#[source] NetError),
    /// hickory-resolver refused the configuration.
    #[error("cannot build the dns resolver: {0}")]
    Resolver(#[source] NetError),
}

/// The auth stage: SPF, DKIM and DMARC for each message.
#[derive(Clone)]
pub struct Auth {
    authenticator: MessageAuthenticator,
    timeout: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The stage asking `config.resolver`, or the system's resolver when it is unset.
    pub fn new(config: AuthConfig) -> Result<Auth, AuthError> {
        if config.timeout_ms == 0 {
            return Err(AuthError::BadSetting {
                setting: "timeout_ms",
                reason: "it must be at least 1",
            });
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let resolver = build_resolver(config.resolver, timeout)?;
        Ok(Auth {
            authenticator: MessageAuthenticator(resolver),
            timeout,
        })
    }

    /// Checks one message: SPF and DKIM side by side, then DMARC from their results.
    /// Never fails; what could not be checked becomes a `*_TEMPERROR` or `*_NONE` tag.
    pub async fn check(&self, analysis: &MailAnalysis, body: &Body) -> Vec<Tag> {
        // One budget for the whole message, so a black-holed resolver costs about
        // `timeout_ms` per message, not once per check.
        let deadline = Instant::now() + self.timeout;
        let received = &analysis.received;
        let message = AuthenticatedMessage::parse(body.raw());
        let sender = Sender::of(received.mail_from.as_str(), received.client.helo.as_str());
        let ip = parse_ip(&received.client.ip);
        let (spf, dkim) = tokio::join!(
            self.spf(ip, &sender, &received.received_by, deadline),
            self.dkim(message.as_ref(), deadline)
        );
        let mut tags = vec![spf.tag, dkim.tag];
        let dmarc = match &message {
            Some(message) => {
                self.dmarc(message, &dkim.outputs, &sender, &spf.output, deadline)
                    .await
            }
            None => Tag::new(DMARC_NONE, "the message headers could not be parsed"),
        };
        tags.push(dmarc);
        for tag in &tags {
            if let Some(kind) = error_kind(&tag.name) {
                count_error(kind);
            }
        }
        tags
    }

    async fn spf(
        &self,
        ip: Option<IpAddr>,
        sender: &Sender<'_>,
        host: &str,
        deadline: Instant,
    ) -> SpfCheck {
        let identity = sender.describe();
        let domain = sender.domain().to_owned();
        let Some(ip) = ip else {
            return SpfCheck::none(domain, format!("{identity}: the client IP is no address"));
        };
        if !looks_like_domain(&domain) {
            return SpfCheck::none(domain, format!("{identity}: no domain to check"));
        }
        let params = match sender {
            Sender::MailFrom { address, helo } => {
                SpfParameters::verify_mail_from(ip, helo, host, address)
            }
            Sender::Helo(helo) => SpfParameters::verify_ehlo(ip, helo, host),
        };
        match tokio::time::timeout_at(deadline, self.authenticator.verify_spf(params)).await {
            Ok(output) => {
                let (name, word) = match output.result() {
                    SpfResult::Pass => (SPF_PASS, "pass"),
                    SpfResult::Fail => (SPF_FAIL, "fail"),
                    SpfResult::SoftFail => (SPF_SOFTFAIL, "softfail"),
                    SpfResult::Neutral => (SPF_NEUTRAL, "neutral"),
                    SpfResult::TempError => (SPF_TEMPERROR, "temperror"),
                    SpfResult::PermError => (SPF_PERMERROR, "permerror"),
                    SpfResult::None => (SPF_NONE, "none"),
                };
                let evidence = format!("{identity}, client {ip}: {word} for {}", output.domain());
                SpfCheck {
                    tag: Tag::new(name, evidence),
                    output,
                }
            }
            Err(_) => SpfCheck {
                tag: Tag::new(
                    SPF_TEMPERROR,
                    format!(
                        "{identity}, client {ip}: no answer within {} ms",
                        self.timeout.as_millis()
                    ),
                ),
                // DMARC must see "unknown", not "fail", for a check cut short.
                output: SpfOutput::new(domain).with_result(SpfResult::TempError),
            },
        }
    }

    async fn dkim<'x>(
        &self,
        message: Option<&'x AuthenticatedMessage<'x>>,
        deadline: Instant,
    ) -> DkimCheck<'x> {
        let Some(message) = message else {
            return DkimCheck {
                tag: Tag::new(DKIM_NONE, "the message headers could not be parsed"),
                outputs: Vec::new(),
            };
        };
        if message.dkim_headers.is_empty() {
            let evidence = if message.has_dkim_errors {
                "no DKIM-Signature could be parsed"
            } else {
                "no DKIM-Signature"
            };
            return DkimCheck {
                tag: Tag::new(DKIM_NONE, evidence),
                outputs: Vec::new(),
            };
        }
        let outputs = match tokio::time::timeout_at(
            deadline,
            self.authenticator.verify_dkim(message),
        )
        .await
        {
            Ok(outputs) => outputs,
            // Every signature is unknown; DMARC then treats an aligned one as a
            // temporary error rather than a failure.
            Err(_) => message
                .dkim_headers
                .iter()
                .map(|header| {
                    DkimOutput::temp_err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
                        format!("no answer within {} ms", self.timeout.as_millis()),
                    )))
                    .with_signature(&header.header)
                })
                .collect(),
        };
        DkimCheck {
            tag: dkim_tag(&outputs),
            outputs,
        }
    }

    async fn dmarc(
        &self,
        message: &AuthenticatedMessage<'_>,
        dkim: &[DkimOutput<'_>],
        sender: &Sender<'_>,
        spf: &SpfOutput,
        deadline: Instant,
    ) -> Tag {
        let params = DmarcParameters::new(message, dkim, sender.domain(), spf);
        match tokio::time::timeout_at(deadline, self.authenticator.verify_dmarc(params)).await {
            Ok(output) => dmarc_tag(&output, message),
            Err(_) => Tag::new(
                DMARC_TEMPERROR,
                format!(
                    "From {}: no answer within {} ms",
                    message.from().rsplit_once('@').map_or("?", |(_, d)| d),
                    self.timeout.as_millis()
                ),
            ),
        }
    }
}

impl Stage for Auth {
    const NAME: &'static str = "auth";
    const NEEDS_BODY: bool = true;

    async fn process(&self, analysis: &MailAnalysis, body: &Body) -> Result<Findings, StageError> {
        Ok(Findings {
            tags: self.check(analysis, body).await,
            ..Findings::default()
        })
    }
}

/// The identity SPF checks.
enum Sender<'a> {
    /// A MAIL FROM address, and the HELO name for the `%{h}` macro.
    MailFrom { address: &'a str, helo: &'a str },
    /// The HELO name, for a null sender.
    Helo(&'a str),
}

impl<'a> Sender<'a> {
    fn of(mail_from: &'a str, helo: &'a str) -> Self {
        let address = mail_from
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        match address.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => Sender::MailFrom { address, helo },
            // A null sender (RFC 7208 §2.4), or a MAIL FROM without a domain.
            _ => Sender::Helo(helo),
        }
    }

    /// The domain whose SPF record is asked; also DMARC's RFC 5321 domain.
    fn domain(&self) -> &'a str {
        match self {
            Sender::MailFrom { address, .. } => address.rsplit_once('@').map_or("", |(_, d)| d),
            Sender::Helo(helo) => helo,
        }
    }

    fn describe(&self) -> String {
        match self {
            Sender::MailFrom { address, .. } => format!("mail from {address}"),
            Sender::Helo(helo) => format!("helo {helo} (null sender)"),
        }
    }
}

struct SpfCheck {
    tag: Tag,
    output: SpfOutput,
}

impl SpfCheck {
    fn none(domain: String, evidence: String) -> Self {
        SpfCheck {
            tag: Tag::new(SPF_NONE, evidence),
            output: SpfOutput::new(domain),
        }
    }
}

struct DkimCheck<'x> {
    tag: Tag,
    outputs: Vec<DkimOutput<'x>>,
}

/// One tag for all signatures: the best outcome wins (a valid signature outweighs an
/// invalid one, since mailing lists add signatures that others break), and the evidence
/// lists every signature with its result.
fn dkim_tag(outputs: &[DkimOutput<'_>]) -> Tag {
    let mut evidence = String::new();
    let (mut valid, mut temp, mut invalid) = (false, false, false);
    for output in outputs {
        let (d, s) = output
            .signature()
            .map_or(("?", "?"), |sig| (sig.d.as_str(), sig.s.as_str()));
        let word = match output.result() {
            DkimResult::Pass => {
                valid = true;
                "pass".to_owned()
            }
            DkimResult::TempError(e) => {
                temp = true;
                format!("temperror ({e})")
            }
            DkimResult::Fail(e) => {
                invalid = true;
                format!("fail ({e})")
            }
            DkimResult::PermError(e) => {
                invalid = true;
                format!("permerror ({e})")
            }
            DkimResult::Neutral(e) => {
                invalid = true;
                format!("neutral ({e})")
            }
            DkimResult::None => "none".to_owned(),
        };
        if !evidence.is_empty() {
            evidence.push_str("; ");
        }
        let _ = write!(evidence, "d={d} s={s}: {word}");
    }
    let name = if valid {
        DKIM_VALID
    } else if temp {
        DKIM_TEMPERROR
    } else if invalid {
        DKIM_INVALID
    } else {
        DKIM_NONE
    };
    if evidence.is_empty() {
        evidence.push_str("no DKIM-Signature");
    }
    Tag::new(name, evidence)
}

fn dmarc_tag(output: &DmarcOutput, message: &AuthenticatedMessage<'_>) -> Tag {
    let domain = if output.domain().is_empty() {
        if message.from.len() > 1 {
            return Tag::new(
                DMARC_NONE,
                "several From: addresses in different domains; DMARC does not apply",
            );
        }
        return Tag::new(DMARC_NONE, "no From: domain");
    } else {
        output.domain()
    };
    let policy = match output.policy() {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    };
    let mechanisms = format!(
        "spf {}, dkim {}",
        result_word(output.spf_result()),
        result_word(output.dkim_result())
    );
    let (name, evidence) = match output.result() {
        DmarcResult::Pass => (
            DMARC_PASS,
            format!("From {domain}: pass ({mechanisms}), p={policy}"),
        ),
        DmarcResult::Fail(_) => (
            match output.policy() {
                Policy::Reject => DMARC_FAIL_REJECT,
                Policy::Quarantine => DMARC_FAIL_QUARANTINE,
                Policy::None | Policy::Unspecified => DMARC_FAIL_NONE,
            },
            format!("From {domain}: fail ({mechanisms}), p={policy}"),
        ),
        DmarcResult::TempError(e) => (DMARC_TEMPERROR, format!("From {domain}: temperror ({e})")),
        DmarcResult::PermError(e) => (DMARC_PERMERROR, format!("From {domain}: permerror ({e})")),
        DmarcResult::None => (DMARC_NONE, format!("From {domain}: no DMARC record")),
    };
    Tag::new(name, evidence)
}

fn result_word(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "aligned pass",
        DmarcResult::Fail(_) => "fail or not aligned",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// The `kind` label of [`STAGE_ERRORS_TOTAL`] a tag counts under, if it means a
/// failed lookup.
fn error_kind(tag: &str) -> Option<&'static str> {
    match tag {
        SPF_TEMPERROR => Some("spf_temperror"),
        DKIM_TEMPERROR => Some("dkim_temperror"),
        DMARC_TEMPERROR => Some("dmarc_temperror"),
        _ => None,
    }
}

fn count_error(kind: &'static str) {
    metrics::counter!(STAGE_ERRORS_TOTAL, "stage" => <Auth as Stage>::NAME, "kind" => kind)
        .increment(1);
}

/// The client IP as ingest recorded it; `[…]` and `IPv6:` forms are accepted too.
fn parse_ip(ip: &str) -> Option<IpAddr> {
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    let ip = ip
        .strip_prefix("IPv6:")
        .or_else(|| ip.strip_prefix("ipv6:"))
        .unwrap_or(ip);
    ip.parse().ok()
}

/// Whether SPF can be asked about `name`: a HELO may be an address literal or a bare
/// word, which have no SPF record, and asking would only cost a lookup.
fn looks_like_domain(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.contains('.')
        && name.parse::<IpAddr>().is_err()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn build_resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TokioResolver, AuthError> {
    let mut builder: ResolverBuilder<TokioRuntimeProvider> = match server {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(AuthError::SystemResolver)?,
    };
    let options = builder.options_mut();
    // The stage's own deadline bounds the whole message; one try per query keeps a
    // dead server from eating that budget twice.
    options.timeout = timeout;
    options.attempts = 1;
    // SPF `a`/`mx` names are senders' hosts, never this machine's /etc/hosts entries.
    options.use_hosts_file = ResolveHosts::Never;
    // Many messages are in flight at once, each with several lookups.
    options.max_active_requests = 1024;
    builder.build().map_err(AuthError::Resolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_pick_the_identity_spf_checks() {
        assert_eq!(Sender::of("a@b.example", "h.example").domain(), "b.example");
        assert_eq!(
            Sender::of("<a@b.example>", "h.example").domain(),
            "b.example"
        );
        assert_eq!(Sender::of("", "h.example").domain(), "h.example");
        assert_eq!(Sender::of("<>", "h.example").domain(), "h.example");
    }

    #[test]
    fn client_ips_and_helo_names_are_read_leniently() {
        assert_eq!(parse_ip("127.0.0.1"), Some([127, 0, 0, 1].into()));
        assert_eq!(parse_ip("[IPv6:::1]"), "::1".parse().ok());
        assert_eq!(parse_ip("unknown"), None);
        assert!(looks_like_domain("mx.example.org"));
        assert!(!looks_like_domain("[192.0.2.1]"));
        assert!(!looks_like_domain("localhost"));
        assert!(!looks_like_domain("192.0.2.1"));
    }

    #[test]
    fn every_tag_has_a_default_weight() {
        let names: Vec<&str> = DEFAULT_AUTH_WEIGHTS.iter().map(|(n, _)| *n).collect();
        for tag in [
            SPF_PASS,
            SPF_FAIL,
            DKIM_VALID,
            DMARC_FAIL_REJECT,
            DMARC_NONE,
        ] {
            assert!(names.contains(&tag), "{tag}");
        }
    }
}
