//! Recursion: forwarding to configured resolvers, or full recursion from the roots.

use std::{net::SocketAddr, time::Instant};

use hickory_proto::{
    op::{Query, ResponseCode},
    rr::{Name, Record, RecordType},
};
use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, NetError},
    recursor::{Recursor, RecursorError, RecursorOptions},
    Resolver,
};

use crate::{cache::Cached, DnsError};

/// The root servers' IPv4 and IPv6 addresses (IANA's root hints). The recursor learns
/// the current set from them on first use, so these only need one to still answer.
const ROOT_HINTS: [&str; 26] = [
    "198.41.0.4",
    "170.247.170.2",
    "192.33.4.12",
    "199.7.91.13",
    "192.203.230.10",
    "192.5.5.241",
    "192.112.36.4",
    "198.97.190.53",
    "192.36.148.17",
    "192.58.128.30",
    "193.0.14.129",
    "199.7.83.42",
    "202.12.27.33",
    "2001:503:ba3e::2:30",
    "2801:1b8:10::b",
    "2001:500:2::c",
    "2001:500:2d::d",
    "2001:500:a8::e",
    "2001:500:2f::f",
    "2001:500:12::d0d",
    "2001:500:1::53",
    "2001:7fe::53",
    "2001:503:c27::2:30",
    "2001:7fd::1",
    "2001:500:9f::42",
    "2001:dc3::35",
];

/// Why a resolution produced no answer: the `reason` label of
/// `pampa_dns_upstream_failures_total`.
pub(crate) type Failure = &'static str;

/// Where recursive questions go.
// There is one per server, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Upstream {
    /// To the configured resolvers, which recurse for us.
    Forward(Resolver<TokioRuntimeProvider>),
    /// From the root servers down.
    Recurse(Recursor<TokioRuntimeProvider>),
}

impl Upstream {
    /// Builds the forwarder (with `forwarders`) or the recursor (without). Needs a tokio
    /// runtime.
    pub(crate) fn new(
        forwarders: &[SocketAddr],
        timeout: std::time::Duration,
    ) -> Result<Self, DnsError> {
        let provider = TokioRuntimeProvider::default();
        if forwarders.is_empty() {
            let roots: Vec<std::net::IpAddr> =
                ROOT_HINTS.iter().filter_map(|s| s.parse().ok()).collect();
            let recursor = Recursor::with_options(&roots, RecursorOptions::default(), provider)
                .map_err(|e| DnsError::Upstream(e.to_string()))?;
            return Ok(Upstream::Recurse(recursor));
        }
        let servers = forwarders
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                ns.connections = vec![udp, tcp];
                ns.trust_negative_responses = true;
                ns
            })
            .collect();
        let mut builder =
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider);
        let opts = builder.options_mut();
        // Questions arrive fully qualified; no search list, no hosts file.
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.edns0 = true;
        opts.timeout = timeout;
        opts.attempts = 2;
        // pampa's own cache sits in front; a small one here only merges bursts.
        opts.cache_size = 1024;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Upstream(e.to_string()))?;
        Ok(Upstream::Forward(resolver))
    }

    /// `forward` or `recurse`, for logs.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Upstream::Forward(_) => "forward",
            Upstream::Recurse(_) => "recurse",
        }
    }

    /// Resolves one question. Negative answers (NXDOMAIN, NODATA) are answers; only
    /// failures to get any answer are errors.
    pub(crate) async fn resolve(&self, name: &Name, rtype: RecordType) -> Result<Cached, Failure> {
        match self {
            Upstream::Forward(resolver) => match resolver.lookup(name.clone(), rtype).await {
                Ok(lookup) => Ok(Cached {
                    rcode: ResponseCode::NoError,
                    answers: lookup.answers().to_vec(),
                    authorities: Vec::new(),
                }),
                Err(e) => negative_from_net(e),
            },
            Upstream::Recurse(recursor) => {
                let query = Query::query(name.clone(), rtype);
                match recursor.resolve(query, Instant::now(), false).await {
                    Ok(message) => {
                        let rcode = message.metadata.response_code;
                        if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                            return Err("upstream");
                        }
                        Ok(Cached {
                            rcode,
                            answers: message.answers,
                            authorities: message.authorities,
                        })
                    }
                    Err(e) => negative_from_recursor(e),
                }
            }
        }
    }
}

fn negative(nx: bool, soa: Option<Record>) -> Cached {
    Cached {
        rcode: if nx {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        },
        answers: Vec::new(),
        authorities: soa.into_iter().collect(),
    }
}

fn negative_from_net(e: NetError) -> Result<Cached, Failure> {
    if e.is_no_records_found() {
        let nx = e.is_nx_domain();
        let soa = e.into_soa().map(|soa| soa.into_record_of_rdata());
        return Ok(negative(nx, soa));
    }
    Err(match e {
        NetError::Timeout => "timeout",
        _ => "upstream",
    })
}

fn negative_from_recursor(e: RecursorError) -> Result<Cached, Failure> {
    if e.is_no_records_found() || e.is_nx_domain() {
        let nx = e.is_nx_domain();
        let soa = e.into_soa().map(|soa| soa.into_record_of_rdata());
        return Ok(negative(nx, soa));
    }
    Err(if e.is_timeout() || matches!(e, RecursorError::Timeout) {
        "timeout"
    } else {
        "upstream"
    })
}
