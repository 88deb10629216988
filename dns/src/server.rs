//! The server: UDP workers and TCP connections, the answer path, reloads, and the
//! hand-off of every query to the query log.
//!
//! Answers from pampa's own zones (authoritative and DNSBL) and from the cache are
//! made synchronously on the task that read the datagram: no task, lock held across an
//! await, or allocation beyond the message itself. Only a cache miss that needs
//! upstream spawns a task.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, RwLock,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hickory_proto::{
    op::{Edns, Message, OpCode, ResponseCode},
    rr::{rdata::HINFO, DNSClass, Name, RData, Record, RecordType},
    serialize::binary::BinDecodable,
};
use ipnet::IpNet;
use pampa_bus::EventLog;
use pampa_schemas::{DnsTransport, ZoneKind};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{watch, Semaphore},
};

#[cfg(target_os = "linux")]
use crate::udpbatch;
use crate::{
    blzone::BlZone,
    cache::{Cache, Cached},
    config::DnsConfig,
    fastpath::{self, Packer},
    metrics, querylog,
    rrl::{RateLimiter, Verdict},
    upstream::Upstream,
    zone::label_count,
    zone::{Answer, Zone},
    DnsError,
};

/// The smallest UDP size every client takes (RFC 1035 §4.2.1), and what a client
/// without EDNS gets.
const MIN_UDP_SIZE: usize = 512;
/// A datagram bigger than this is not a query pampa answers; the buffer is sized so
/// any UDP payload fits.
const MAX_DATAGRAM: usize = 65_535;

/// A zone pampa answers for itself.
#[derive(Clone)]
enum ZoneRef {
    Auth(Arc<Zone>),
    Dnsbl(Arc<BlZone>),
}

/// Every zone by apex, swapped whole on reload.
struct Zones {
    by_apex: HashMap<Name, ZoneRef>,
    max_labels: usize,
    /// Every apex as lowercased wire labels, with its DNSBL zone (`None`: an
    /// authoritative zone), for the fast path's closest-zone search on the wire name.
    wire: Vec<(Vec<u8>, Option<Arc<BlZone>>)>,
}

impl Zones {
    fn build(auth: &[Arc<Zone>], dnsbl: &[Arc<BlZone>]) -> Zones {
        let mut by_apex = HashMap::new();
        for z in dnsbl {
            by_apex.insert(z.origin().clone(), ZoneRef::Dnsbl(z.clone()));
        }
        for z in auth {
            by_apex.insert(z.origin().clone(), ZoneRef::Auth(z.clone()));
        }
        let max_labels = by_apex.keys().map(label_count).max().unwrap_or(0);
        let wire = by_apex
            .iter()
            .map(|(apex, zone)| {
                let z = match zone {
                    ZoneRef::Dnsbl(z) => Some(z.clone()),
                    ZoneRef::Auth(_) => None,
                };
                (fastpath::name_wire(&apex.to_lowercase()), z)
            })
            .collect();
        Zones {
            by_apex,
            max_labels,
            wire,
        }
    }

    /// [`Zones::find`] on a lowercased wire name (labels without the root's zero):
    /// the closest enclosing zone, and where its apex starts in `lower`.
    fn find_wire(&self, lower: &[u8]) -> Option<(&Option<Arc<BlZone>>, usize)> {
        let mut p = 0;
        loop {
            let suffix = &lower[p..];
            if let Some((_, z)) = self.wire.iter().find(|(apex, _)| apex.as_slice() == suffix) {
                return Some((z, p));
            }
            if p >= lower.len() {
                return None;
            }
            p += 1 + usize::from(lower[p]);
        }
    }

    /// The closest enclosing zone of `name`.
    fn find(&self, name: &Name) -> Option<&ZoneRef> {
        if self.by_apex.is_empty() {
            return None;
        }
        let labels = label_count(name);
        for n in (0..=labels.min(self.max_labels)).rev() {
            let found = if n == labels {
                self.by_apex.get(name)
            } else {
                self.by_apex.get(&name.trim_to(n))
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// `ZoneKind`s, for indexing [`QueryMetrics`].
const ZONE_KINDS: usize = 6;
/// Distinct [`rcode_label`]s.
const RCODE_LABELS: usize = 8;

/// The per-query metric handles, each looked up in the registry once (on first use, so
/// a series appears when it first counts, as with the macros) instead of on every query.
struct QueryMetrics {
    queries: [[OnceLock<::metrics::Counter>; RCODE_LABELS]; ZONE_KINDS],
    duration: [OnceLock<::metrics::Histogram>; ZONE_KINDS],
}

impl QueryMetrics {
    fn new() -> Self {
        QueryMetrics {
            queries: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            duration: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn record(&self, kind: ZoneKind, rcode: ResponseCode, elapsed: Duration) {
        let k = match kind {
            ZoneKind::Authoritative => 0,
            ZoneKind::Dnsbl => 1,
            ZoneKind::Recursive => 2,
            ZoneKind::Cache => 3,
            ZoneKind::Refused => 4,
            ZoneKind::None => 5,
        };
        let label = rcode_label(rcode);
        let r = match label {
            "NOERROR" => 0,
            "FORMERR" => 1,
            "SERVFAIL" => 2,
            "NXDOMAIN" => 3,
            "NOTIMP" => 4,
            "REFUSED" => 5,
            "BADVERS" => 6,
            _ => 7,
        };
        self.queries[k][r]
            .get_or_init(|| ::metrics::counter!(metrics::QUERIES_TOTAL, "zone_kind" => kind.as_str(), "rcode" => label))
            .increment(1);
        self.duration[k]
            .get_or_init(|| ::metrics::histogram!(metrics::QUERY_DURATION_SECONDS, "zone_kind" => kind.as_str()))
            .record(elapsed.as_secs_f64());
    }
}

/// What every worker shares.
struct Shared {
    config: DnsConfig,
    /// The authoritative zones as last loaded (and the files they came from), in
    /// configuration order.
    auth: RwLock<Vec<Arc<Zone>>>,
    dnsbl: Vec<Arc<BlZone>>,
    zones: RwLock<Arc<Zones>>,
    recursion_nets: Vec<IpNet>,
    forwarders: Vec<SocketAddr>,
    upstream: OnceLock<Upstream>,
    upstream_permits: Semaphore,
    cache: Cache,
    rrl: RateLimiter,
    query_log: Option<querylog::Queue>,
    query_metrics: QueryMetrics,
    listening: AtomicBool,
    reloading: tokio::sync::Mutex<()>,
}

impl Shared {
    fn zones(&self) -> Arc<Zones> {
        // Only whole `Arc`s are stored, so a poisoned lock still holds a good one.
        self.zones.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.recursion_nets.iter().any(|n| n.contains(&ip))
    }
}

/// The two bound sockets, from [`Dns::bind`].
#[derive(Debug)]
pub struct DnsSockets {
    /// The UDP socket.
    pub udp: UdpSocket,
    /// The TCP listener, on the same address.
    pub tcp: TcpListener,
}

impl DnsSockets {
    /// The bound address (useful after binding port 0); UDP and TCP share it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// One zone in a [`ReloadReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneStatus {
    /// The configured zone name.
    pub name: String,
    /// Its file.
    pub file: std::path::PathBuf,
    /// What the reload did with it.
    pub outcome: ReloadOutcome,
}

/// What a reload did with one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file was read and now serves.
    Loaded {
        /// The SOA serial (authoritative zones; 0 for DNSBL datasets).
        serial: u32,
        /// Records (authoritative zones; 0 for DNSBL datasets).
        records: usize,
    },
    /// A DNSBL dataset whose file had not changed.
    Unchanged,
    /// The file is broken; the previous version keeps serving. The message names the
    /// file and, when known, the line.
    Failed(String),
}

/// What [`DnsHandle::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Authoritative zones, in configuration order.
    pub zones: Vec<ZoneStatus>,
    /// DNSBL zones, in configuration order.
    pub dnsbl: Vec<ZoneStatus>,
}

impl ReloadReport {
    /// Whether every file loaded (or was unchanged).
    pub fn is_ok(&self) -> bool {
        self.zones
            .iter()
            .chain(&self.dnsbl)
            .all(|z| !matches!(z.outcome, ReloadOutcome::Failed(_)))
    }
}

/// A view of a running server: readiness and reloads.
#[derive(Clone)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

impl DnsHandle {
    /// Whether the sockets are being read (for `/readyz`).
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::Relaxed)
    }

    /// Re-reads every zone file and every changed DNSBL dataset, then swaps the new
    /// versions in at once; queries in flight finish on the old ones and none is
    /// dropped. A broken file keeps its previous version serving: the report says which
    /// and why, and the call returns `Err` with the first such error (naming the file
    /// and line) so a `pampa dns reload` exits non-zero. Zones added to or removed from
    /// the configuration need a restart.
    pub async fn reload(&self) -> Result<ReloadReport, DnsError> {
        let shared = self.shared.clone();
        let _one_at_a_time = shared.reloading.lock().await;
        let worker = shared.clone();
        let (report, first_error) = tokio::task::spawn_blocking(move || reload_blocking(&worker))
            .await
            .map_err(|_| DnsError::Stopped)?;
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Like [`DnsHandle::reload`], but returns the report even when a file failed.
    pub async fn reload_report(&self) -> ReloadReport {
        let shared = self.shared.clone();
        let _one_at_a_time = shared.reloading.lock().await;
        let worker = shared.clone();
        match tokio::task::spawn_blocking(move || reload_blocking(&worker)).await {
            Ok((report, _)) => report,
            Err(_) => ReloadReport {
                zones: Vec::new(),
                dnsbl: Vec::new(),
            },
        }
    }
}

fn reload_blocking(shared: &Shared) -> (ReloadReport, Option<DnsError>) {
    let mut first_error = None;
    let old = shared
        .auth
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut zones = Vec::with_capacity(shared.config.zones.len());
    let mut statuses = Vec::with_capacity(shared.config.zones.len());
    for (config, old) in shared.config.zones.iter().zip(old) {
        let (zone, outcome) = match Zone::load(config) {
            Ok(zone) => {
                let outcome = ReloadOutcome::Loaded {
                    serial: zone.serial(),
                    records: zone.records(),
                };
                ::metrics::counter!(metrics::ZONE_RELOADS_TOTAL, "kind" => "authoritative", "result" => "ok")
                    .increment(1);
                (Arc::new(zone), outcome)
            }
            Err(error) => {
                ::metrics::counter!(metrics::ZONE_RELOADS_TOTAL, "kind" => "authoritative", "result" => "error")
                    .increment(1);
                tracing::error!(%error, "A zone failed to load; its previous version keeps serving.");
                let outcome = ReloadOutcome::Failed(error.to_string());
                first_error.get_or_insert(error);
                (old, outcome)
            }
        };
        statuses.push(ZoneStatus {
            name: config.name.clone(),
            file: config.file.clone(),
            outcome,
        });
        zones.push(zone);
    }
    let mut dnsbl = Vec::with_capacity(shared.dnsbl.len());
    for z in &shared.dnsbl {
        let outcome = match z.reload_if_changed() {
            None => ReloadOutcome::Unchanged,
            Some(Ok(())) => ReloadOutcome::Loaded {
                serial: 0,
                records: 0,
            },
            Some(Err(error)) => {
                let outcome = ReloadOutcome::Failed(error.to_string());
                first_error.get_or_insert(error);
                outcome
            }
        };
        dnsbl.push(ZoneStatus {
            name: z.name().to_owned(),
            file: z.file().to_path_buf(),
            outcome,
        });
    }
    let new = Arc::new(Zones::build(&zones, &shared.dnsbl));
    *shared.auth.write().unwrap_or_else(|p| p.into_inner()) = zones;
    *shared.zones.write().unwrap_or_else(|p| p.into_inner()) = new;
    tracing::info!(
        zones = statuses.len(),
        dnsbl = dnsbl.len(),
        "Reloaded the DNS zones."
    );
    (
        ReloadReport {
            zones: statuses,
            dnsbl,
        },
        first_error,
    )
}

/// The DNS server.
pub struct Dns {
    shared: Arc<Shared>,
    log: EventLog,
    publish_timeout: Duration,
    log_rx: Option<querylog::Publisher>,
}

impl Dns {
    /// Checks the configuration and loads every zone and DNSBL dataset (blocking: call
    /// it before serving, or from `spawn_blocking` for big datasets). Any broken file
    /// is an error: a server should not start half-configured. `publish_timeout` (the
    /// bus's) bounds each query-log publish.
    pub fn new(
        config: DnsConfig,
        log: EventLog,
        publish_timeout: Duration,
    ) -> Result<Dns, DnsError> {
        let recursion_nets = config.recursion_networks()?;
        let forwarders = config.forwarder_addrs()?;
        let mut auth = Vec::with_capacity(config.zones.len());
        for zone in &config.zones {
            let loaded = Zone::load(zone)?;
            tracing::info!(zone = %zone.name, serial = loaded.serial(), records = loaded.records(), "Loaded a zone.");
            auth.push(Arc::new(loaded));
        }
        let mut dnsbl = Vec::with_capacity(config.dnsbl.len());
        for zone in &config.dnsbl {
            dnsbl.push(Arc::new(BlZone::load(zone)?));
            tracing::info!(zone = %zone.name, "Loaded a DNSBL dataset.");
        }
        let zones = Arc::new(Zones::build(&auth, &dnsbl));
        let (tx, rx) = if config.query_log {
            let (tx, rx) = querylog::channel(config.query_log_queue);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Shared {
            auth: RwLock::new(auth),
            dnsbl,
            zones: RwLock::new(zones),
            recursion_nets,
            forwarders,
            upstream: OnceLock::new(),
            upstream_permits: Semaphore::new(config.max_recursive_in_flight.max(1)),
            cache: Cache::new(config.cache_size),
            rrl: RateLimiter::new(&config.rate_limit),
            query_log: tx,
            query_metrics: QueryMetrics::new(),
            listening: AtomicBool::new(false),
            reloading: tokio::sync::Mutex::new(()),
            config,
        };
        Ok(Dns {
            shared: Arc::new(shared),
            log,
            publish_timeout,
            log_rx: rx,
        })
    }

    /// Binds the configured address, UDP and TCP. With port 0, TCP takes the port UDP
    /// got.
    pub async fn bind(&self) -> Result<DnsSockets, DnsError> {
        let addr = self.shared.config.listen.clone();
        let bind_err = |source| DnsError::Bind {
            addr: addr.clone(),
            source,
        };
        let mut last = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        );
        let mut udp = None;
        for candidate in tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(bind_err)?
        {
            match reuseport_udp(candidate) {
                Ok(socket) => {
                    udp = Some(socket);
                    break;
                }
                Err(error) => last = error,
            }
        }
        let udp = udp.ok_or(last).map_err(bind_err)?;
        let local = udp.local_addr().map_err(bind_err)?;
        // Without SO_REUSEPORT: a second server on the same address still fails here,
        // although its UDP socket could join this one's port.
        let tcp = TcpListener::bind(local).await.map_err(bind_err)?;
        Ok(DnsSockets { udp, tcp })
    }

    /// A handle that stays valid while [`Dns::serve`] runs: readiness and reloads.
    pub fn handle(&self) -> DnsHandle {
        DnsHandle {
            shared: self.shared.clone(),
        }
    }

    /// Answers queries until `shutdown` turns true, then stops reading, and flushes the
    /// query log.
    pub async fn serve(self, sockets: DnsSockets, mut shutdown: watch::Receiver<bool>) {
        let Dns {
            shared,
            log,
            publish_timeout,
            log_rx,
        } = self;
        let addr = sockets.local_addr().ok();
        if !shared.recursion_nets.is_empty() {
            match Upstream::new(&shared.forwarders, shared.config.recursion_timeout) {
                Ok(upstream) => {
                    tracing::info!(mode = upstream.mode(), "DNS recursion ready.");
                    let _ = shared.upstream.set(upstream);
                }
                // Serving our own zones is still worth doing.
                Err(error) => {
                    tracing::error!(%error, "DNS recursion is unavailable; recursive queries get SERVFAIL.")
                }
            }
        }
        let (log_stop, log_stop_rx) = watch::channel(false);
        let log_task =
            log_rx.map(|rx| tokio::spawn(querylog::run(rx, log, publish_timeout, log_stop_rx)));
        let poller = tokio::spawn(poll_dnsbl(shared.clone(), shutdown.clone()));

        tracing::info!(addr = ?addr, zones = shared.config.zones.len(), dnsbl = shared.dnsbl.len(), "DNS server listening.");
        shared.listening.store(true, Ordering::Relaxed);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16);
        // A socket per worker on the same port (SO_REUSEPORT): the kernel spreads the
        // clients over them, and a datagram wakes only the worker whose socket it is on.
        // Workers sharing one socket were all woken for each datagram and all but one
        // found nothing, which cost more than the answer. If the port cannot be shared
        // (sockets bound elsewhere, without SO_REUSEPORT), the workers share what there is.
        let mut udp = vec![Arc::new(sockets.udp)];
        if let Some(local) = addr {
            for _ in 1..workers {
                match reuseport_udp(local) {
                    Ok(socket) => udp.push(Arc::new(socket)),
                    Err(error) => {
                        tracing::debug!(%error, "No second UDP socket on the DNS port; the workers share one.");
                        break;
                    }
                }
            }
        }
        let mut tasks = Vec::with_capacity(workers + 1);
        for i in 0..workers {
            tasks.push(tokio::spawn(udp_worker(
                shared.clone(),
                udp[i % udp.len()].clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(tcp_accept(
            shared.clone(),
            sockets.tcp,
            shutdown.clone(),
        )));
        let _ = shutdown.wait_for(|stop| *stop).await;
        shared.listening.store(false, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        poller.abort();
        let _ = log_stop.send(true);
        if let Some(task) = log_task {
            let drain = publish_timeout.saturating_mul(2) + Duration::from_secs(1);
            if tokio::time::timeout(drain, task).await.is_err() {
                tracing::warn!("DNS query events still queued at shutdown were abandoned.");
            }
        }
        tracing::info!("DNS server stopped.");
    }
}

/// Checks the DNSBL files every `dnsbl_poll_interval` and reloads the changed ones.
async fn poll_dnsbl(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    if shared.dnsbl.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(
        shared
            .config
            .dnsbl_poll_interval
            .max(Duration::from_millis(50)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let worker = shared.clone();
        let _one_at_a_time = shared.reloading.lock().await;
        let _ = tokio::task::spawn_blocking(move || {
            for z in &worker.dnsbl {
                // Errors are logged and counted inside.
                let _ = z.reload_if_changed();
            }
        })
        .await;
    }
}

/// Who asked, how, and when.
#[derive(Debug, Clone, Copy)]
struct Client {
    peer: SocketAddr,
    transport: DnsTransport,
    started: Instant,
    time: DateTime<Utc>,
}

/// The question, as the query log records it (as it came: the log lowercases it).
#[derive(Debug, Clone, Default)]
struct Question {
    id: Option<u16>,
    query: Option<(Name, RecordType, DNSClass)>,
}

/// A response ready to encode.
struct Reply {
    message: Message,
    kind: ZoneKind,
    zone: Option<Name>,
    question: Question,
    /// The most bytes the client takes.
    limit: usize,
}

/// A question that needs upstream.
struct Pending {
    reply: Reply,
    name: Name,
    rtype: RecordType,
}

enum Step {
    Reply(Reply),
    Upstream(Pending),
    Drop(&'static str),
}

fn dropped(reason: &'static str) {
    ::metrics::counter!(metrics::DROPPED_TOTAL, "reason" => reason).increment(1);
}

/// Reads one query and answers it from pampa's own data, or says it needs upstream.
fn prepare(shared: &Shared, bytes: &[u8], client: &Client) -> Step {
    if bytes.len() < 12 {
        return Step::Drop("short");
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    if bytes[2] & 0x80 != 0 {
        // A response: answering it could start a loop between two servers.
        return Step::Drop("response");
    }
    let op_code = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
    let rd = bytes[2] & 0x01 != 0;
    let recursion_ok = shared.may_recurse(client.peer.ip());
    let tcp = client.transport == DnsTransport::Tcp;

    let bare = |rcode: ResponseCode| {
        let mut m = Message::response(id, op_code);
        m.metadata.recursion_desired = rd;
        m.metadata.recursion_available = recursion_ok;
        m.metadata.response_code = rcode;
        Reply {
            message: m,
            kind: ZoneKind::None,
            zone: None,
            question: Question {
                id: Some(id),
                ..Question::default()
            },
            limit: if tcp { MAX_DATAGRAM } else { MIN_UDP_SIZE },
        }
    };

    let request = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(error) => {
            tracing::debug!(%error, peer = %client.peer, "Answered a malformed query with FORMERR.");
            return Step::Reply(bare(ResponseCode::FormErr));
        }
    };
    if op_code != OpCode::Query {
        let mut reply = bare(ResponseCode::NotImp);
        reply.message.queries = request.queries.clone();
        reply.question = question_of(&request);
        return Step::Reply(reply);
    }
    let mut reply = bare(ResponseCode::NoError);
    reply.question = question_of(&request);
    let md = &request.metadata;
    reply.message.metadata.checking_disabled = md.checking_disabled;
    reply.message.queries = request.queries.clone();
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(shared.config.max_udp_payload.max(MIN_UDP_SIZE as u16));
        ours.set_version(0);
        reply.message.set_edns(ours);
        if !tcp {
            reply.limit = usize::from(edns.max_payload()).clamp(
                MIN_UDP_SIZE,
                usize::from(shared.config.max_udp_payload).max(MIN_UDP_SIZE),
            );
        }
        if edns.version() > 0 {
            reply.message.metadata.response_code = ResponseCode::BADVERS;
            return Step::Reply(reply);
        }
    }
    if request.queries.len() != 1 {
        reply.message.metadata.response_code = ResponseCode::FormErr;
        return Step::Reply(reply);
    }
    let query = &request.queries[0];
    let (qname, qtype) = (query.name().clone(), query.query_type());
    if query.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        reply.kind = ZoneKind::Refused;
        reply.message.metadata.response_code = ResponseCode::Refused;
        return Step::Reply(reply);
    }
    if qtype == RecordType::OPT {
        reply.message.metadata.response_code = ResponseCode::FormErr;
        return Step::Reply(reply);
    }

    let zones = shared.zones();
    if let Some(zone) = zones.find(&qname) {
        let (answer, kind, apex) = match zone {
            ZoneRef::Auth(z) => (
                z.lookup(&qname, qtype, tcp),
                ZoneKind::Authoritative,
                z.origin(),
            ),
            ZoneRef::Dnsbl(z) => (z.lookup(&qname, qtype), ZoneKind::Dnsbl, z.origin()),
        };
        reply.kind = kind;
        reply.zone = Some(apex.clone());
        apply(&mut reply.message, answer);
        if qtype == RecordType::ANY && !tcp && kind == ZoneKind::Authoritative {
            rfc8482(&mut reply.message, &qname);
        }
        return Step::Reply(reply);
    }

    if !recursion_ok {
        reply.kind = ZoneKind::Refused;
        reply.message.metadata.response_code = ResponseCode::Refused;
        return Step::Reply(reply);
    }
    let cache_name = qname.to_lowercase();
    if let Some(cached) = shared.cache.get(&cache_name, qtype) {
        ::metrics::counter!(metrics::CACHE_TOTAL, "result" => "hit").increment(1);
        reply.kind = ZoneKind::Cache;
        fill_recursive(&mut reply.message, cached);
        return Step::Reply(reply);
    }
    if !rd {
        // Without RD a client asks what we already know; we know nothing of this.
        reply.kind = ZoneKind::Refused;
        reply.message.metadata.response_code = ResponseCode::Refused;
        return Step::Reply(reply);
    }
    ::metrics::counter!(metrics::CACHE_TOTAL, "result" => "miss").increment(1);
    reply.kind = ZoneKind::Recursive;
    Step::Upstream(Pending {
        reply,
        name: cache_name,
        rtype: qtype,
    })
}

/// Resolves a cache miss upstream and caches the result.
async fn resolve(shared: &Shared, pending: Pending) -> Reply {
    let Pending {
        mut reply,
        name,
        rtype,
    } = pending;
    let failure = |reply: &mut Reply, reason: &'static str| {
        ::metrics::counter!(metrics::UPSTREAM_FAILURES_TOTAL, "reason" => reason).increment(1);
        reply.message.metadata.response_code = ResponseCode::ServFail;
    };
    let Some(upstream) = shared.upstream.get() else {
        failure(&mut reply, "upstream");
        return reply;
    };
    let Ok(_permit) = shared.upstream_permits.try_acquire() else {
        failure(&mut reply, "overloaded");
        return reply;
    };
    let result = tokio::time::timeout(
        shared.config.recursion_timeout,
        upstream.resolve(&name, rtype),
    )
    .await;
    match result {
        Ok(Ok(answer)) => {
            shared.cache.put(&name, rtype, answer.clone());
            ::metrics::gauge!(metrics::CACHE_ENTRIES).set(shared.cache.len() as f64);
            fill_recursive(&mut reply.message, answer);
        }
        Ok(Err(reason)) => failure(&mut reply, reason),
        Err(_) => failure(&mut reply, "timeout"),
    }
    reply
}

fn fill_recursive(message: &mut Message, answer: Cached) {
    message.metadata.response_code = answer.rcode;
    message.metadata.authoritative = false;
    message.answers = answer.answers;
    message.authorities = answer.authorities;
}

fn apply(message: &mut Message, answer: Answer) {
    message.metadata.response_code = answer.rcode;
    message.metadata.authoritative = answer.authoritative;
    message.answers = answer.answers;
    message.authorities = answer.authorities;
    message.additionals = answer.additionals;
}

/// RFC 8482: over UDP, ANY gets one small synthesized record instead of everything at
/// the name, which is what makes ANY an amplification tool.
fn rfc8482(message: &mut Message, qname: &Name) {
    if message.metadata.response_code != ResponseCode::NoError || message.answers.is_empty() {
        return;
    }
    let ttl = message.answers.iter().map(|r| r.ttl).min().unwrap_or(3600);
    message.answers = vec![Record::from_rdata(
        qname.clone(),
        ttl,
        RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
    )];
    message.additionals.clear();
}

fn question_of(request: &Message) -> Question {
    Question {
        id: Some(request.metadata.id),
        query: request
            .queries
            .first()
            .map(|q| (q.name().clone(), q.query_type(), q.query_class())),
    }
}

/// The rcode's name: the metric label and the event's `rcode`. Rare codes share
/// `OTHER` in metrics so the label stays bounded.
pub(crate) fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// Encodes the reply within the client's limit (over UDP: truncated with TC when it
/// does not fit, or as the rate limit says), and records the query. `None`: send
/// nothing.
fn finish(shared: &Shared, mut reply: Reply, client: &Client) -> Option<Vec<u8>> {
    let mut rate_limited = false;
    let mut truncated = false;
    let mut bytes = None;
    if client.transport == DnsTransport::Udp
        && shared.rrl.enabled()
        && !(shared.config.rate_limit.exempt_recursion_clients
            && shared.may_recurse(client.peer.ip()))
    {
        match shared.rrl.check(client.peer.ip()) {
            Verdict::Send => {}
            Verdict::Slip => {
                ::metrics::counter!(metrics::RRL_TOTAL, "action" => "slip").increment(1);
                rate_limited = true;
                truncated = true;
                truncate(&mut reply.message);
            }
            Verdict::Drop => {
                ::metrics::counter!(metrics::RRL_TOTAL, "action" => "drop").increment(1);
                dropped("rate_limited");
                rate_limited = true;
                bytes = Some(Vec::new());
            }
        }
    }
    if bytes.is_none() {
        let mut encoded = match reply.message.to_vec() {
            Ok(b) => b,
            Err(error) => {
                // A record we hold cannot be written: answer SERVFAIL rather than nothing.
                tracing::warn!(%error, "Could not encode a DNS response.");
                reply.message.metadata.response_code = ResponseCode::ServFail;
                truncate(&mut reply.message);
                reply.message.metadata.truncation = false;
                reply.message.to_vec().ok()?
            }
        };
        if encoded.len() > reply.limit {
            ::metrics::counter!(metrics::TRUNCATED_TOTAL, "zone_kind" => reply.kind.as_str())
                .increment(1);
            truncated = true;
            truncate(&mut reply.message);
            encoded = reply.message.to_vec().ok()?;
        }
        bytes = Some(encoded);
    }
    let bytes = bytes.unwrap_or_default();
    let rcode = reply.message.metadata.response_code;
    let response_size = bytes.len() as u32;
    account(shared, client, reply.kind, rcode, |latency_us| {
        querylog::QueryRecord {
            time: client.time,
            peer: client.peer,
            transport: client.transport,
            id: reply.question.id,
            question: reply.question.query,
            rcode,
            answer_count: reply.message.answers.len() as u16,
            zone_kind: reply.kind,
            latency_us,
            response_size,
            zone: reply.zone,
            truncated,
            rate_limited,
        }
    });
    (!bytes.is_empty()).then_some(bytes)
}

/// Counts an answered query in the metrics and hands it to the query log; `record`
/// builds the log's record (given the latency) only when there is a log.
fn account(
    shared: &Shared,
    client: &Client,
    kind: ZoneKind,
    rcode: ResponseCode,
    record: impl FnOnce(u64) -> querylog::QueryRecord,
) {
    let elapsed = client.started.elapsed();
    shared.query_metrics.record(kind, rcode, elapsed);
    if let Some(queue) = &shared.query_log {
        queue.push(record(elapsed.as_micros() as u64));
    }
}

/// Answers a plain query for a name under a DNSBL zone straight from its bytes into
/// `p.out` (see [`fastpath`]), and accounts for it as [`finish`] would. `false`: not
/// such a query, or one whose answer needs more than the fast path does (the apex,
/// truncation, the rate limit); the general path must answer it.
fn fast_answer(shared: &Shared, bytes: &[u8], client: &Client, p: &mut Packer) -> bool {
    let Some(q) = fastpath::parse(bytes) else {
        return false;
    };
    // The types hickory reads back to the same number; AXFR, IXFR and OPT have their
    // own answers on the general path.
    if !matches!(q.qtype, 1 | 2 | 5 | 6 | 12 | 15 | 16 | 28 | 33 | 255) {
        return false;
    }
    let recursion_ok = shared.may_recurse(client.peer.ip());
    if client.transport == DnsTransport::Udp
        && shared.rrl.enabled()
        && !(shared.config.rate_limit.exempt_recursion_clients && recursion_ok)
    {
        return false;
    }
    let mut lower = [0u8; 255];
    if !fastpath::lowercase(q.qname, &mut lower) {
        return false;
    }
    let lower = &lower[..q.qname.len()];
    let zones = shared.zones();
    let Some((Some(zone), apex_at)) = zones.find_wire(lower) else {
        return false;
    };
    if apex_at == 0 {
        return false;
    }
    let mut starts = [0u8; 128];
    let labels = fastpath::label_starts(&lower[..apex_at], &mut starts);
    let mut key = [0u8; 255];
    let key = fastpath::dataset_key(lower, labels, &mut key);

    p.clear();
    p.u16(q.id);
    p.out.push(0x80 | 0x04 | u8::from(q.rd));
    p.out
        .push(if recursion_ok { 0x80 } else { 0 } | if q.cd { 0x10 } else { 0 });
    p.out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    p.name(q.qname);
    p.u16(q.qtype);
    p.u16(fastpath::CLASS_IN);
    let (rcode, answers, authorities) = zone.answer_wire(q.qname, q.qtype, key, p);
    let max_payload = shared.config.max_udp_payload.max(MIN_UDP_SIZE as u16);
    let mut limit = MIN_UDP_SIZE;
    if let Some(payload) = q.edns_payload {
        p.out.push(0);
        p.u16(fastpath::TYPE_OPT);
        p.u16(max_payload);
        p.u32(0);
        p.u16(0);
        limit = usize::from(payload).clamp(MIN_UDP_SIZE, usize::from(max_payload));
    }
    if client.transport == DnsTransport::Udp && p.out.len() > limit {
        return false;
    }
    p.out[3] |= rcode.low();
    p.out[6..8].copy_from_slice(&answers.to_be_bytes());
    p.out[8..10].copy_from_slice(&authorities.to_be_bytes());
    p.out[10..12].copy_from_slice(&u16::from(q.edns_payload.is_some()).to_be_bytes());
    let response_size = p.out.len() as u32;
    account(shared, client, ZoneKind::Dnsbl, rcode, |latency_us| {
        let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&bytes[12..]);
        let name = Name::read(&mut decoder).unwrap_or_default();
        querylog::QueryRecord {
            time: client.time,
            peer: client.peer,
            transport: client.transport,
            id: Some(q.id),
            question: Some((name, RecordType::from(q.qtype), DNSClass::IN)),
            rcode,
            answer_count: answers,
            zone_kind: ZoneKind::Dnsbl,
            latency_us,
            response_size,
            zone: Some(zone.origin().clone()),
            truncated: false,
            rate_limited: false,
        }
    });
    true
}

/// Keeps the header, the question and the OPT record, and sets TC.
fn truncate(message: &mut Message) {
    message.metadata.truncation = true;
    message.answers.clear();
    message.authorities.clear();
    message.additionals.clear();
}

/// Reads the worker's socket in batches ([`udpbatch`]) and answers each query: from the
/// wire fast path when it can, else through [`prepare`] and [`finish`]; cache misses go
/// upstream on their own task.
#[cfg(target_os = "linux")]
async fn udp_worker(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = udpbatch::Batch::new();
    let mut packer = Packer::default();
    loop {
        let readable = tokio::select! {
            r = socket.readable() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        if let Err(error) = readable {
            tracing::debug!(%error, "Waiting for DNS datagrams failed.");
            continue;
        }
        loop {
            let n = match batch.recv(&socket) {
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // ICMP port unreachable from an earlier reply shows up here on some
                    // systems; it is no reason to stop.
                    tracing::debug!(%error, "Receiving DNS datagrams failed.");
                    break;
                }
            };
            // One clock reading for the batch: its queries arrived together.
            let (started, time) = (Instant::now(), Utc::now());
            for i in 0..n {
                let Some(peer) = batch.peer(i) else { continue };
                if batch.truncated(i) {
                    dropped("oversize");
                    continue;
                }
                let client = Client {
                    peer,
                    transport: DnsTransport::Udp,
                    started,
                    time,
                };
                if fast_answer(&shared, batch.query(i), &client, &mut packer) {
                    batch.reply_buffer(i).extend_from_slice(&packer.out);
                    continue;
                }
                match prepare(&shared, batch.query(i), &client) {
                    Step::Drop(reason) => dropped(reason),
                    Step::Reply(reply) => {
                        if let Some(bytes) = finish(&shared, reply, &client) {
                            batch.set_reply(i, bytes);
                        }
                    }
                    Step::Upstream(pending) => {
                        answer_from_upstream(&shared, &socket, pending, client, peer)
                    }
                }
            }
            batch.send(&socket).await;
            if n < udpbatch::BATCH {
                break;
            }
            // Full batches never wait on the socket, so they would never give the
            // runtime back to the publisher and the TCP tasks: spend tokio's budget.
            tokio::task::coop::consume_budget().await;
        }
    }
}

/// One datagram at a time, where `recvmmsg` is not available.
#[cfg(not(target_os = "linux"))]
async fn udp_worker(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut packer = Packer::default();
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "Receiving a DNS datagram failed.");
                continue;
            }
        };
        let client = Client {
            peer,
            transport: DnsTransport::Udp,
            started: Instant::now(),
            time: Utc::now(),
        };
        if fast_answer(&shared, &buf[..n], &client, &mut packer) {
            send(&socket, &packer.out, peer).await;
            continue;
        }
        match prepare(&shared, &buf[..n], &client) {
            Step::Drop(reason) => dropped(reason),
            Step::Reply(reply) => {
                if let Some(bytes) = finish(&shared, reply, &client) {
                    send(&socket, &bytes, peer).await;
                }
            }
            Step::Upstream(pending) => {
                answer_from_upstream(&shared, &socket, pending, client, peer)
            }
        }
    }
}

/// A non-blocking UDP socket on `addr` with SO_REUSEPORT set, so that each worker can
/// have its own socket on the port.
fn reuseport_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Resolves a query that needs an upstream in a task of its own, and answers it over
/// UDP when the upstream has: the receive loop goes on meanwhile.
fn answer_from_upstream(
    shared: &Arc<Shared>,
    socket: &Arc<UdpSocket>,
    pending: Pending,
    client: Client,
    peer: SocketAddr,
) {
    let shared = shared.clone();
    let socket = socket.clone();
    tokio::spawn(async move {
        let reply = resolve(&shared, pending).await;
        if let Some(bytes) = finish(&shared, reply, &client) {
            send(&socket, &bytes, peer).await;
        }
    });
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%error, "Sending a DNS response failed.");
    }
}

async fn tcp_accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_tcp_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "Accepting a DNS TCP connection failed.");
                // Out of file descriptors: give the others a moment to close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            dropped("overloaded");
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            ::metrics::gauge!(metrics::TCP_CONNECTIONS).increment(1.0);
            tcp_connection(&shared, stream, peer, shutdown).await;
            ::metrics::gauge!(metrics::TCP_CONNECTIONS).decrement(1.0);
            drop(slot);
        });
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) in order until the client closes,
/// idles out, or sends something unreadable.
async fn tcp_connection(
    shared: &Shared,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let idle = shared.config.tcp_idle_timeout;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_exact(&mut len)) => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        buf.resize(len, 0);
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let client = Client {
            peer,
            transport: DnsTransport::Tcp,
            started: Instant::now(),
            time: Utc::now(),
        };
        let reply = match prepare(shared, &buf, &client) {
            Step::Drop(reason) => {
                dropped(reason);
                return;
            }
            Step::Reply(reply) => reply,
            Step::Upstream(pending) => resolve(shared, pending).await,
        };
        let Some(bytes) = finish(shared, reply, &client) else {
            continue;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if !matches!(
            tokio::time::timeout(idle, stream.write_all(&framed)).await,
            Ok(Ok(_))
        ) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsblConfig, DnsblFormat, ZoneConfig};

    #[test]
    fn rcode_labels_are_bounded() {
        assert_eq!(rcode_label(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_label(ResponseCode::Unknown(3000)), "OTHER");
        assert_eq!(querylog::type_name(RecordType::Unknown(65280)), "TYPE65280");
        assert_eq!(querylog::type_name(RecordType::MX), "MX");
    }

    /// A server's shared state without a query log, for calling the answer paths.
    fn shared_for(config: DnsConfig) -> Shared {
        let auth: Vec<_> = config
            .zones
            .iter()
            .map(|z| Arc::new(Zone::load(z).unwrap()))
            .collect();
        let dnsbl: Vec<_> = config
            .dnsbl
            .iter()
            .map(|z| Arc::new(BlZone::load(z).unwrap()))
            .collect();
        Shared {
            zones: RwLock::new(Arc::new(Zones::build(&auth, &dnsbl))),
            auth: RwLock::new(auth),
            dnsbl,
            recursion_nets: config.recursion_networks().unwrap(),
            forwarders: Vec::new(),
            upstream: OnceLock::new(),
            upstream_permits: Semaphore::new(1),
            cache: Cache::new(16),
            rrl: RateLimiter::new(&config.rate_limit),
            query_log: None,
            query_metrics: QueryMetrics::new(),
            listening: AtomicBool::new(false),
            reloading: tokio::sync::Mutex::new(()),
            config,
        }
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn pick<'a, T>(&mut self, of: &'a [T]) -> &'a T {
            &of[self.below(of.len() as u64) as usize]
        }
    }

    fn fixture(dir: &std::path::Path, rate_limit: bool) -> Shared {
        let ip4 = dir.join("bl.ip4set");
        std::fs::write(
            &ip4,
            "\
$SOA 3600 ns1.example.net. Hostmaster.Example.NET. 7 3600 600 86400 120
:127.0.0.2:Listed, see http://bl.example.net/$
1.2.3.4
10.0.0.0/8
!10.1.2.3
192.168.1
1.2.3.5 :127.0.0.3:Own text for $ and $$
1.2.3.6 :4
1.2.3.7 :5:
",
        )
        .unwrap();
        let names = dir.join("dbl.dnset");
        std::fs::write(
            &names,
            ":2:Domain $ listed\nspam.example.com\n.bad.example\n!good.bad.example\n",
        )
        .unwrap();
        let zone = dir.join("auth.zone");
        std::fs::write(
            &zone,
            "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
        )
        .unwrap();
        let mut config = DnsConfig {
            recursion_allowed: vec!["127.0.0.0/8".to_owned()],
            ..DnsConfig::default()
        };
        config.dnsbl = vec![
            DnsblConfig {
                name: "bl.example.net".to_owned(),
                file: ip4,
                format: DnsblFormat::Ip4set,
            },
            DnsblConfig {
                name: "DBL.Example.Net".to_owned(),
                file: names,
                format: DnsblFormat::Dnset,
            },
        ];
        config.zones = vec![ZoneConfig {
            name: "auth.bl.example.net".to_owned(),
            file: zone,
        }];
        if !rate_limit {
            config.rate_limit.responses_per_second = 0;
        } else {
            config.rate_limit.responses_per_second = 5;
        }
        shared_for(config)
    }

    fn query(rng: &mut Rng, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&(rng.below(65536) as u16).to_be_bytes());
        q.push(*rng.pick(&[0u8, 1]));
        q.push(*rng.pick(&[0u8, 0x10, 0x20]));
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            // Random case, as DNS 0x20 clients send.
            q.push(label.len() as u8);
            q.extend(label.bytes().map(|b| {
                if rng.below(3) == 0 {
                    b.to_ascii_uppercase()
                } else {
                    b
                }
            }));
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        match rng.below(4) {
            0 => {}
            _ => {
                q[11] = 1;
                let size = *rng.pick(&[0u16, 100, 512, 600, 1232, 4096]);
                let flags = *rng.pick(&[0u16, 0x8000]);
                q.push(0);
                q.extend_from_slice(&41u16.to_be_bytes());
                q.extend_from_slice(&size.to_be_bytes());
                q.extend_from_slice(&[0, 0]);
                q.extend_from_slice(&flags.to_be_bytes());
                q.extend_from_slice(&[0, 0]);
            }
        }
        q
    }

    fn slow(shared: &Shared, bytes: &[u8], client: &Client) -> Option<Vec<u8>> {
        match prepare(shared, bytes, client) {
            Step::Reply(reply) => finish(shared, reply, client),
            Step::Drop(_) => None,
            Step::Upstream(_) => Some(b"upstream".to_vec()),
        }
    }

    /// Whatever the fast path answers, it answers with the general path's bytes.
    #[test]
    fn fast_path_answers_as_the_general_path() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "4.3.2.1.bl.example.net",
            "5.3.2.1.bl.example.net",
            "6.3.2.1.bl.example.net",
            "7.3.2.1.bl.example.net",
            "8.3.2.1.bl.example.net",
            "3.2.1.10.bl.example.net",
            "4.2.1.10.bl.example.net",
            "9.1.168.192.bl.example.net",
            "2.0.0.127.bl.example.net",
            "1.0.0.127.bl.example.net",
            "02.0.0.127.bl.example.net",
            "3.2.1.bl.example.net",
            "x.4.3.2.1.bl.example.net",
            "bl.example.net",
            "ns1.auth.bl.example.net",
            "nothing.auth.bl.example.net",
            "auth.bl.example.net",
            "example.net",
            "4.3.2.1.elsewhere.org",
            "spam.example.com.dbl.example.net",
            "x.bad.example.dbl.example.net",
            "good.bad.example.dbl.example.net",
            "bad.example.dbl.example.net",
            "test.dbl.example.net",
            "invalid.dbl.example.net",
            "dbl.example.net",
            "a-b_c.dbl.example.net",
        ];
        let types = [1u16, 2, 5, 6, 12, 15, 16, 28, 33, 99, 255, 252, 41, 0];
        let local: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5300".parse().unwrap();
        for rate_limit in [false, true] {
            let shared = fixture(dir.path(), rate_limit);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut packer = Packer::default();
            let (mut fast, mut total) = (0, 0);
            for round in 0..20_000 {
                let name = *rng.pick(&names);
                let qtype = *rng.pick(&types);
                let mut bytes = query(&mut rng, name, qtype);
                if round % 4 == 3 {
                    // Damage: any byte, any value.
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.below(256) as u8;
                }
                let client = Client {
                    peer: *rng.pick(&[local, remote]),
                    transport: DnsTransport::Udp,
                    started: Instant::now(),
                    time: Utc::now(),
                };
                total += 1;
                if fast_answer(&shared, &bytes, &client, &mut packer) {
                    fast += 1;
                    // The general path, asked again, counts the query for the rate
                    // limit too; with the limit on the fast path never answers.
                    assert!(!rate_limit || client.peer == local);
                    let expected = slow(&shared, &bytes, &client);
                    assert_eq!(
                        Some(&packer.out),
                        expected.as_ref(),
                        "query {bytes:02x?} for {name} type {qtype}"
                    );
                }
            }
            // Most undamaged DNSBL questions; with the rate limit on, only those from
            // the exempt client.
            let share = if rate_limit { 8 } else { 4 };
            assert!(fast * share > total, "the fast path took {fast} of {total}");
        }
    }
}
