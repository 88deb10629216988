//! Where mail for a domain goes: its MX hosts by preference (RFC 5321 §5.1), or the
//! domain's own address when it has no MX, and the addresses of each host.

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use hickory_resolver::{
    config::{NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::{op::ResponseCode, rr::Name, rr::RData},
    Resolver, TokioResolver,
};

/// Why a domain has no place to deliver to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The domain does not exist: permanent.
    NoMail(String),
    /// The domain publishes a null MX (RFC 7505): it takes no mail, by its own say.
    NullMx(String),
    /// DNS did not answer usefully (timeout, SERVFAIL): try again later.
    Temporary(String),
}

/// The relay's resolver.
#[derive(Clone)]
pub struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// Asks `server`, or the servers of `/etc/resolv.conf` when `None`.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self, NetError> {
        let mut builder = match server {
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
            None => TokioResolver::builder_tokio()?,
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        options.attempts = 2;
        options.use_hosts_file = ResolveHosts::Never;
        Ok(MxResolver {
            resolver: builder.build()?,
        })
    }

    /// The hosts to try for `domain`, most preferred first.
    pub async fn hosts(&self, domain: &str) -> Result<Vec<String>, RouteError> {
        let name = fqdn(domain)
            .ok_or_else(|| RouteError::NoMail(format!("{domain}: not a valid domain name")))?;
        match self.resolver.mx_lookup(name).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if mxs.is_empty() {
                    return Ok(vec![domain.to_owned()]);
                }
                if mxs.iter().any(|(_, host)| host == "." || host.is_empty()) {
                    return Err(RouteError::NullMx(format!(
                        "{domain}: the domain accepts no mail (null MX)"
                    )));
                }
                // Equal preferences are tried in a random order (RFC 5321 §5.1), so
                // load spreads across a domain's MXs.
                mxs.sort_by_key(|(preference, _)| (*preference, rand_key()));
                Ok(mxs
                    .into_iter()
                    .map(|(_, host)| host.trim_end_matches('.').to_owned())
                    .collect())
            }
            // No MX record: the domain itself is the implicit MX (RFC 5321 §5.1).
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if none.response_code == ResponseCode::NoError =>
            {
                Ok(vec![domain.to_owned()])
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if none.response_code == ResponseCode::NXDomain =>
            {
                Err(RouteError::NoMail(format!(
                    "{domain}: Host or domain name not found"
                )))
            }
            Err(error) => Err(RouteError::Temporary(format!(
                "{domain}: MX lookup failed: {error}"
            ))),
        }
    }

    /// The addresses of one host; empty when it has none.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(host)
            .ok_or_else(|| RouteError::NoMail(format!("{host}: not a valid host name")))?;
        match self.resolver.lookup_ip(name).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if none.response_code != ResponseCode::ServFail =>
            {
                Ok(Vec::new())
            }
            Err(error) => Err(RouteError::Temporary(format!(
                "{host}: address lookup failed: {error}"
            ))),
        }
    }
}

/// A cheap shuffle key: the order among equal preferences need not be cryptographic.
fn rand_key() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u32
}

fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}
