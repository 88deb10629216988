//! The DNS client behind the stage: a small trait, so unit tests inject a fake, and
//! its real implementation on hickory-resolver.

use std::{future::Future, net::Ipv4Addr, net::SocketAddr, time::Duration};

use hickory_resolver::{
    config::{NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::{
        op::ResponseCode,
        rr::{Name, RData},
    },
    Resolver, ResolverBuilder, TokioResolver,
};

use super::RblError;

/// What one blocklist query came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The name exists: its A records (the list's return codes).
    Listed(Vec<Ipv4Addr>),
    /// NXDOMAIN, or no A record: not listed.
    NotListed,
    /// No answer in time: unknown.
    Timeout,
    /// SERVFAIL: unknown.
    ServFail,
    /// The server could not be reached (refused port, no route): unknown.
    Unreachable,
    /// Any other failure (REFUSED, a malformed answer, …): unknown.
    Error,
}

impl Answer {
    /// The `kind` label this answer counts under in
    /// [`STAGE_ERRORS_TOTAL`](crate::metrics::STAGE_ERRORS_TOTAL), if it is a failure.
    pub fn error_kind(&self) -> Option<&'static str> {
        match self {
            Answer::Listed(_) | Answer::NotListed => None,
            Answer::Timeout => Some("timeout"),
            Answer::ServFail => Some("servfail"),
            Answer::Unreachable => Some("unreachable"),
            Answer::Error => Some("dns_error"),
        }
    }
}

/// Looks up A records for the stage. The stage bounds every call with its own
/// timeout, so an implementation may take as long as it likes.
pub trait Resolve: Send + Sync + 'static {
    /// The A records of `name`: a fully qualified name without the trailing dot, such
    /// as `2.0.0.127.zen.example`.
    fn lookup_a(&self, name: &str) -> impl Future<Output = Answer> + Send;

    /// Drops what a cache holds for `name`, so that the next lookup asks the list.
    /// Health probes call it: a probe must see the list as it is now.
    fn forget(&self, name: &str) {
        let _ = name;
    }
}

/// The real resolver: hickory-resolver with its cache, one attempt per lookup.
#[derive(Clone)]
pub struct DnsResolver {
    resolver: TokioResolver,
}

impl DnsResolver {
    /// Asks `server` (UDP, and TCP when an answer is truncated), or the servers of
    /// `/etc/resolv.conf` when `None`; each query gives up after `timeout`.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self, RblError> {
        let builder = match server {
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
            None => TokioResolver::builder_tokio().map_err(RblError::SystemResolver)?,
        };
        Self::finish(builder, timeout)
    }

    /// A resolver with no server, for a stage without lists: it is never asked, and
    /// startup must not depend on `/etc/resolv.conf` then.
    pub(crate) fn idle() -> Result<Self, RblError> {
        let builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(Vec::new()),
            TokioRuntimeProvider::default(),
        );
        Self::finish(builder, Duration::from_secs(1))
    }

    fn finish(
        mut builder: ResolverBuilder<TokioRuntimeProvider>,
        timeout: Duration,
    ) -> Result<Self, RblError> {
        let options = builder.options_mut();
        options.timeout = timeout;
        // One try: a second would double the worst-case delay of every message, and
        // an unanswered lookup only means "unknown".
        options.attempts = 1;
        // Blocklist names never live in /etc/hosts.
        options.use_hosts_file = ResolveHosts::Never;
        // Many messages are in flight at once, each with a few lookups; the default
        // (32 per TCP connection) would turn a busy minute into errors.
        options.max_active_requests = 1024;
        let resolver = builder.build().map_err(RblError::Resolver)?;
        Ok(DnsResolver { resolver })
    }
}

impl Resolve for DnsResolver {
    async fn lookup_a(&self, name: &str) -> Answer {
        let Some(name) = fqdn(name) else {
            // Too long or malformed: no such name can exist, so nothing is listed.
            tracing::debug!(name, "A blocklist query name is not a valid DNS name.");
            return Answer::NotListed;
        };
        match self.resolver.ipv4_lookup(name).await {
            Ok(lookup) => {
                let mut codes: Vec<Ipv4Addr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                codes.sort();
                codes.dedup();
                if codes.is_empty() {
                    Answer::NotListed
                } else {
                    Answer::Listed(codes)
                }
            }
            Err(e) => classify(&e),
        }
    }

    fn forget(&self, name: &str) {
        if let Some(name) = fqdn(name) {
            self.resolver
                .clear_lookup_cache(name, hickory_resolver::proto::rr::RecordType::A);
        }
    }
}

fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// Sorts a resolver error into what it means for a blocklist: NXDOMAIN and NODATA are
/// answers ("not listed"); everything else leaves the question open.
pub(crate) fn classify(error: &NetError) -> Answer {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none))
            if none.response_code == ResponseCode::ServFail =>
        {
            Answer::ServFail
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => Answer::NotListed,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Answer::ServFail,
        NetError::Timeout => Answer::Timeout,
        NetError::Io(_) | NetError::NoConnections | NetError::Busy => Answer::Unreachable,
        _ => Answer::Error,
    }
}
