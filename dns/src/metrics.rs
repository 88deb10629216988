//! Metric names of the DNS server (DESIGN.md §6). Labels are bounded: `zone_kind` is a
//! [`pampa_schemas::ZoneKind`] name, `rcode` one of the names in
//! `crate::server::rcode_label` (others become `other`), `transport` is `udp` or
//! `tcp`, and `kind` is `authoritative` or `dnsbl`. Never a client address or a name.

/// Counter: queries answered, by `zone_kind` and `rcode`.
pub const QUERIES_TOTAL: &str = "pampa_dns_queries_total";
/// Histogram: seconds from reading a query to sending its response, by `zone_kind`.
pub const QUERY_DURATION_SECONDS: &str = "pampa_dns_query_duration_seconds";
/// Counter: UDP responses truncated (TC) to fit the client's size, by `zone_kind`.
pub const TRUNCATED_TOTAL: &str = "pampa_dns_truncated_total";
/// Counter: datagrams dropped without a response, by `reason` (`short`, `response`,
/// `rate_limited`, `overloaded`, `encode_error`, `oversize`: a UDP datagram over 4 KiB).
pub const DROPPED_TOTAL: &str = "pampa_dns_dropped_total";
/// Counter: recursive queries by `result`: `hit` (answered from the cache) or `miss`
/// (resolved upstream). The cache hit ratio is hit / (hit + miss).
pub const CACHE_TOTAL: &str = "pampa_dns_cache_total";
/// Gauge: answers held in the recursion cache.
pub const CACHE_ENTRIES: &str = "pampa_dns_cache_entries";
/// Counter: recursive resolutions that failed (SERVFAIL sent), by `reason` (`timeout`,
/// `upstream`, `overloaded`).
pub const UPSTREAM_FAILURES_TOTAL: &str = "pampa_dns_upstream_failures_total";
/// Counter: `dns.query` events lost, by `reason` (`queue_full`, `publish_failed`).
pub const QUERY_LOG_DROPPED_TOTAL: &str = "pampa_dns_query_log_dropped_total";
/// Counter: zone and dataset loads after the first, by `kind` (`authoritative`,
/// `dnsbl`) and `result` (`ok`, `error`).
pub const ZONE_RELOADS_TOTAL: &str = "pampa_dns_zone_reloads_total";
/// Counter: responses held back by the response-rate limit, by `action` (`slip`:
/// sent truncated, `drop`: not sent).
pub const RRL_TOTAL: &str = "pampa_dns_rrl_total";
/// Gauge: TCP connections open.
pub const TCP_CONNECTIONS: &str = "pampa_dns_tcp_connections";
