//! The server: two UDP sockets, a task per request, the live sessions projection and
//! the audit publisher.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, StreamExt};
use pampa_bus::{EventLog, OutgoingEvent};
use pampa_schemas::{decode, new_id, AccessAcct, AccessAuth, AccessAuths, Envelope, Event};
use std::{
    future::Future,
    task::{Context, Poll, Waker},
};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
};
use tracing::Instrument;

use crate::{
    acct, acct_writer, auth,
    cache::{Begin, PasswordCache, ReplyCache},
    config::RadiusConfig,
    crypto::{self, MessageAuthenticator},
    directory::{NasClient, RadiusDirectory},
    metrics,
    packet::{Code, Packet, PacketWriter, MAX_PACKET_LEN},
    sessions::Sessions,
    RadiusError,
};

/// Which port a packet came in on: also the `kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Access,
    Accounting,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Accounting => "accounting",
        }
    }
}

fn dropped(kind: Kind, reason: &'static str) {
    ::metrics::counter!(metrics::DROPPED_TOTAL, "kind" => kind.label(), "reason" => reason)
        .increment(1);
    tracing::debug!(reason, "Dropped a RADIUS packet.");
}

/// What every request task shares.
pub(crate) struct Shared<D> {
    pub(crate) config: RadiusConfig,
    pub(crate) directory: Arc<D>,
    pub(crate) log: EventLog,
    pub(crate) publish_timeout: Duration,
    sessions: Mutex<Sessions>,
    replies: ReplyCache,
    pub(crate) passwords: PasswordCache,
    pub(crate) password_permits: Semaphore,
    audit: mpsc::Sender<AccessAuth>,
    /// Accounting records waiting to be durable (`acct_writer`).
    acct: mpsc::Sender<(OutgoingEvent, acct_writer::PendingRecord)>,
    listening: AtomicBool,
    pub(crate) metrics: metrics::Handles,
}

impl<D> Shared<D> {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The projection is only ever mutated by whole `apply` calls; a panic elsewhere
        // while the lock was held leaves it usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions of `address`, for Simultaneous-Use.
    pub(crate) fn open_sessions(&self, address: &str) -> u32 {
        self.sessions().count_for(address)
    }

    pub(crate) fn apply(&self, record: &AccessAcct) {
        let mut sessions = self.sessions();
        sessions.apply(record);
        ::metrics::gauge!(metrics::ACTIVE_SESSIONS).set(sessions.len() as f64);
    }
}

/// The two bound sockets, from [`Radius::bind`].
#[derive(Debug)]
pub struct RadiusSockets {
    /// Access-Request socket.
    pub auth: UdpSocket,
    /// Accounting-Request socket.
    pub acct: UdpSocket,
}

impl RadiusSockets {
    /// The bound authentication address (useful after binding port 0).
    pub fn auth_addr(&self) -> std::io::Result<SocketAddr> {
        self.auth.local_addr()
    }

    /// The bound accounting address.
    pub fn acct_addr(&self) -> std::io::Result<SocketAddr> {
        self.acct.local_addr()
    }
}

/// A view of a running server.
pub struct RadiusHandle<D> {
    shared: Arc<Shared<D>>,
}

impl<D> Clone for RadiusHandle<D> {
    fn clone(&self) -> Self {
        RadiusHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<D> RadiusHandle<D> {
    /// Whether both sockets are being read (for `/readyz`): false before the sessions
    /// projection is rebuilt and after shutdown.
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::Relaxed)
    }

    /// A snapshot of the open sessions Simultaneous-Use counts against.
    pub fn active_sessions(&self) -> Vec<crate::sessions::Session> {
        self.shared
            .sessions()
            .active()
            .into_iter()
            .cloned()
            .collect()
    }

    /// Open sessions of a user (address or User-Name).
    pub fn sessions_of(&self, user: &str) -> u32 {
        self.shared.open_sessions(user)
    }
}

/// The RADIUS server, generic over the directory it asks about NASes and users.
pub struct Radius<D> {
    shared: Arc<Shared<D>>,
    audit_rx: mpsc::Receiver<AccessAuth>,
    acct_rx: mpsc::Receiver<(OutgoingEvent, acct_writer::PendingRecord)>,
}

impl<D: RadiusDirectory> Radius<D> {
    /// Builds the server. `publish_timeout` (the bus's) bounds each publish: an
    /// accounting record not confirmed within it gets no reply.
    pub fn new(
        config: RadiusConfig,
        directory: D,
        log: EventLog,
        publish_timeout: Duration,
    ) -> Self {
        let (audit, audit_rx) = mpsc::channel(config.audit_queue.max(1));
        // Never full in practice: each queued record holds one of `max_in_flight` permits.
        let (acct, acct_rx) = mpsc::channel(config.max_in_flight.max(1));
        let shared = Shared {
            sessions: Mutex::new(Sessions::with_default_realm(config.default_realm.clone())),
            replies: ReplyCache::new(config.duplicate_ttl, config.duplicate_cache_size),
            passwords: PasswordCache::new(config.password_cache_ttl, config.password_cache_size),
            password_permits: Semaphore::new(config.password_check_concurrency.max(1)),
            directory: Arc::new(directory),
            log,
            publish_timeout,
            audit,
            acct,
            listening: AtomicBool::new(false),
            metrics: metrics::Handles::register(),
            config,
        };
        Radius {
            shared: Arc::new(shared),
            audit_rx,
            acct_rx,
        }
    }

    /// Binds both configured addresses.
    pub async fn bind(&self) -> Result<RadiusSockets, RadiusError> {
        let bind = |addr: String| async move {
            UdpSocket::bind(&addr)
                .await
                .map_err(|source| RadiusError::Bind { addr, source })
        };
        Ok(RadiusSockets {
            auth: bind(self.shared.config.auth_listen.clone()).await?,
            acct: bind(self.shared.config.acct_listen.clone()).await?,
        })
    }

    /// A handle that stays valid while [`Radius::serve`] runs: for `/readyz` and for
    /// looking at the live projection.
    pub fn handle(&self) -> RadiusHandle<D> {
        RadiusHandle {
            shared: self.shared.clone(),
        }
    }

    /// Rebuilds the sessions projection from `access.acct` of the last
    /// `max_session_age`, then answers requests until `shutdown` turns true. On shutdown
    /// it stops reading, lets requests in flight finish (their accounting publishes
    /// included), and flushes the audit queue.
    pub async fn serve(self, sockets: RadiusSockets, mut shutdown: watch::Receiver<bool>) {
        let Radius {
            shared,
            audit_rx,
            acct_rx,
        } = self;
        let auth_addr = sockets.auth_addr().ok();
        let acct_addr = sockets.acct_addr().ok();

        let since = Utc::now()
            - chrono::Duration::from_std(shared.config.max_session_age)
                .unwrap_or(chrono::Duration::days(7));
        let mut position = Position::start(since);
        tokio::select! {
            r = catch_up(&shared, &mut position) => match r {
                Ok(n) => tracing::info!(events = n, sessions = shared.sessions().len(), "Rebuilt the RADIUS sessions projection."),
                // Serving without it only weakens Simultaneous-Use; refusing every login
                // would be worse.
                Err(error) => tracing::warn!(%error, "Could not replay access.acct; Simultaneous-Use starts from no sessions."),
            },
            _ = shutdown.changed() => return,
        }

        let (audit_stop, audit_stop_rx) = watch::channel(false);
        let audit_task = tokio::spawn(audit_loop(
            audit_rx,
            shared.log.clone(),
            shared.publish_timeout,
            audit_stop_rx,
        ));
        let housekeeping = tokio::spawn(housekeeping(shared.clone(), position, shutdown.clone()));
        let acct_writer = tokio::spawn(acct_writer::run(shared.clone(), acct_rx));

        let max_in_flight = shared.config.max_in_flight.max(1);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        tracing::info!(auth = ?auth_addr, acct = ?acct_addr, "RADIUS server listening.");
        shared.listening.store(true, Ordering::Relaxed);
        // Several readers per socket, one per runtime worker: a request answered inline
        // occupies its reader, so one reader would serialise the whole port on one core.
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let auth_socket = Arc::new(sockets.auth);
        let acct_socket = Arc::new(sockets.acct);
        let mut loops = Vec::new();
        for _ in 0..readers {
            for (socket, kind) in [
                (&auth_socket, Kind::Access),
                (&acct_socket, Kind::Accounting),
            ] {
                loops.push(tokio::spawn(recv_loop(
                    shared.clone(),
                    socket.clone(),
                    kind,
                    in_flight.clone(),
                    shutdown.clone(),
                )));
            }
        }
        futures::future::join_all(loops).await;
        shared.listening.store(false, Ordering::Relaxed);

        // Requests in flight may be waiting on a publish; give them that long.
        let drain = shared.publish_timeout.saturating_mul(2) + Duration::from_secs(1);
        if tokio::time::timeout(drain, in_flight.acquire_many(max_in_flight as u32))
            .await
            .is_err()
        {
            tracing::warn!("RADIUS requests still in flight at shutdown were abandoned.");
        }
        // Every queued accounting record held a permit, so the writer has none left.
        acct_writer.abort();
        let _ = audit_stop.send(true);
        if tokio::time::timeout(drain, audit_task).await.is_err() {
            tracing::warn!("Audit events still queued at shutdown were abandoned.");
        }
        housekeeping.abort();
        tracing::info!("RADIUS server stopped.");
    }
}

/// How far the projection has read the log.
#[derive(Debug, Clone, Copy)]
struct Position {
    since: DateTime<Utc>,
    last_sequence: Option<u64>,
}

impl Position {
    fn start(since: DateTime<Utc>) -> Self {
        Position {
            since,
            last_sequence: None,
        }
    }
}

/// Applies every `access.acct` after `position` to the projection and moves it on.
/// Events at the boundary instant are read again and skipped by sequence.
async fn catch_up<D>(shared: &Shared<D>, position: &mut Position) -> Result<u64, RadiusError> {
    let mut stream = shared
        .log
        .replay_stream(AccessAcct::EVENT_TYPE, position.since);
    let mut applied = 0;
    while let Some(event) = stream.next().await {
        let event = event?;
        if position
            .last_sequence
            .is_some_and(|last| event.sequence <= last)
        {
            continue;
        }
        position.last_sequence = Some(event.sequence);
        position.since = event.published_at;
        match decode::<AccessAcct>(&event.payload) {
            Ok(envelope) => {
                shared.apply(&envelope.payload);
                applied += 1;
            }
            // One bad event must not stop the projection.
            Err(error) => {
                tracing::warn!(event_id = %event.id, %error, "Skipped an undecodable access.acct event.")
            }
        }
    }
    Ok(applied)
}

/// Every `access.acct` since `since`, decoded, in log order: what `pampa sessions` and
/// `pampa usage` feed to [`Sessions`] and [`crate::UsageBuilder`].
pub fn acct_events(
    log: &EventLog,
    since: DateTime<Utc>,
) -> BoxStream<'static, Result<AccessAcct, RadiusError>> {
    log.replay_stream(AccessAcct::EVENT_TYPE, since)
        .map(|event| {
            let event = event?;
            decode::<AccessAcct>(&event.payload)
                .map(|e| e.payload)
                .map_err(|source| RadiusError::Event {
                    id: event.id,
                    source,
                })
        })
        .boxed()
}

/// Expires stale sessions, and with `follow_interval` set, follows the log so the
/// sessions other radius processes record are counted too.
async fn housekeeping<D>(
    shared: Arc<Shared<D>>,
    mut position: Position,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = shared
        .config
        .follow_interval
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if shared.config.follow_interval.is_some() {
            if let Err(error) = catch_up(&shared, &mut position).await {
                tracing::warn!(%error, "Could not follow access.acct; retrying.");
            }
        }
        if let Ok(age) = chrono::Duration::from_std(shared.config.max_session_age) {
            let mut sessions = shared.sessions();
            sessions.expire(Utc::now() - age);
            ::metrics::gauge!(metrics::ACTIVE_SESSIONS).set(sessions.len() as f64);
        }
    }
}

/// Most decisions in one `access.auth` event (a batch, see `AccessAuths`): a burst of
/// logins costs one log row per thousand.
const AUDIT_BATCH: usize = 1024;

/// Publishes the decisions off the request path: what has queued up since the last
/// publish goes out as one `access.auth` event. One publish at a time, so the log holds
/// the decisions in the order they were made; at 1,024 decisions an event that is
/// hundreds of thousands a second, and the queue absorbs a publish's wait.
async fn audit_loop(
    mut rx: mpsc::Receiver<AccessAuth>,
    log: EventLog,
    publish_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = stop.changed() => { rx.close(); rx.recv().await }
        };
        let Some(event) = next else { break };
        batch.push(event);
        while batch.len() < AUDIT_BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let decisions = AccessAuths {
            decisions: std::mem::replace(&mut batch, Vec::with_capacity(AUDIT_BATCH)),
        };
        let n = decisions.decisions.len();
        let mut envelope = Envelope::root(new_id(), acct::SOURCE, decisions);
        if let Some(first) = envelope.payload.decisions[0].time {
            envelope.occurred_at = first;
        }
        let published = match OutgoingEvent::from_envelope(&envelope) {
            Ok(event) => matches!(
                tokio::time::timeout(publish_timeout, log.publish(&event)).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        if !published {
            ::metrics::counter!(metrics::AUDIT_LOST_TOTAL, "reason" => "publish_failed")
                .increment(n as u64);
            tracing::warn!(
                decisions = n,
                "A batch of access.auth audit decisions was not recorded."
            );
        }
    }
}

async fn recv_loop<D: RadiusDirectory>(
    shared: Arc<Shared<D>>,
    socket: Arc<UdpSocket>,
    kind: Kind,
    in_flight: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Anything past 4096 bytes is padding (RFC 2865 §3), so a bigger buffer buys nothing.
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    loop {
        if *shutdown.borrow() {
            break;
        }
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.changed() => break,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "Receiving a RADIUS datagram failed.");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped(kind, "overloaded");
            continue;
        };
        let span = tracing::debug_span!(
            "radius_request",
            kind = kind.label(),
            %peer,
            id = tracing::field::Empty,
            nas = tracing::field::Empty,
            user = tracing::field::Empty,
            event_id = tracing::field::Empty,
        );
        let request = Request {
            shared: shared.clone(),
            socket: socket.clone(),
            datagram: buf,
            len,
            peer,
            kind,
        };
        let mut task = Box::pin(request.handle(permit).instrument(span));
        // Most requests never wait: the NAS, the user and the password check are cached
        // and the reply is sent at once. Those run to the end right here, on the receive
        // loop, without a task, a copy of the datagram or a wake-up of another thread;
        // that halves the CPU a cached PAP request costs. A request that has to wait (a
        // directory query, argon2, an accounting record's publish) is handed to its own
        // task, which polls it again with a real waker, so nothing is lost by this first
        // poll's no-op one.
        match task.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(datagram) => buf = datagram,
            Poll::Pending => {
                tokio::spawn(task);
                buf = vec![0u8; MAX_PACKET_LEN];
            }
        }
    }
}

/// One received datagram and what answering it needs. It owns the receive buffer, which
/// goes back to the loop when the request finishes without waiting.
struct Request<D> {
    shared: Arc<Shared<D>>,
    socket: Arc<UdpSocket>,
    datagram: Vec<u8>,
    len: usize,
    peer: SocketAddr,
    kind: Kind,
}

impl<D: RadiusDirectory> Request<D> {
    async fn handle(self, permit: OwnedSemaphorePermit) -> Vec<u8> {
        let started = Instant::now();
        let data = &self.datagram[..self.len];
        let mut permit = Some(permit);
        let answered = match self.kind {
            Kind::Access => handle_access(&self.shared, &self.socket, data, self.peer).await,
            Kind::Accounting => {
                handle_accounting(&self.shared, &self.socket, data, self.peer, &mut permit).await
            }
        };
        if answered {
            let histogram = match self.kind {
                Kind::Access => &self.shared.metrics.access_duration,
                Kind::Accounting => &self.shared.metrics.accounting_duration,
            };
            histogram.record(started.elapsed().as_secs_f64());
        }
        drop(permit);
        self.datagram
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%error, "Sending a RADIUS reply failed.");
    }
}

/// Decodes, finds the NAS, and counts it: the steps both ports share.
async fn admit<'a, D: RadiusDirectory>(
    shared: &Shared<D>,
    kind: Kind,
    data: &'a [u8],
    peer: SocketAddr,
) -> Option<(Packet<'a>, Arc<NasClient>)> {
    let packet = match Packet::decode(data) {
        Ok(p) => p,
        Err(e) => {
            dropped(kind, malformed_reason(e.reason()));
            return None;
        }
    };
    tracing::Span::current().record("id", packet.identifier);
    let nas = match shared.directory.nas(peer.ip()).await {
        Ok(Some(nas)) => nas,
        Ok(None) => {
            dropped(kind, "unknown_nas");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, "The directory failed to look up a NAS.");
            dropped(kind, "directory_error");
            return None;
        }
    };
    tracing::Span::current().record("nas", nas.network.as_str());
    shared
        .metrics
        .nas_request(&nas.network, kind == Kind::Accounting);
    Some((packet, nas))
}

fn malformed_reason(reason: &'static str) -> &'static str {
    match reason {
        "too_short" => "malformed_too_short",
        "bad_length" => "malformed_bad_length",
        "truncated" => "malformed_truncated",
        "unknown_code" => "malformed_unknown_code",
        "bad_attribute_length" => "malformed_bad_attribute_length",
        _ => "malformed_bad_attribute_value",
    }
}

/// One Access-Request (or Status-Server). Returns whether a reply was sent.
async fn handle_access<D: RadiusDirectory>(
    shared: &Arc<Shared<D>>,
    socket: &UdpSocket,
    data: &[u8],
    peer: SocketAddr,
) -> bool {
    let Some((packet, nas)) = admit(shared, Kind::Access, data, peer).await else {
        return false;
    };
    if !matches!(packet.code, Code::AccessRequest | Code::StatusServer) {
        dropped(Kind::Access, "unexpected_code");
        return false;
    }
    match crypto::verify_message_authenticator(&packet, &nas.secret) {
        MessageAuthenticator::Valid => {}
        MessageAuthenticator::Invalid => {
            dropped(Kind::Access, "bad_message_authenticator");
            return false;
        }
        // Status-Server always needs one (RFC 5997 §3).
        MessageAuthenticator::Absent
            if nas.require_message_authenticator || packet.code == Code::StatusServer =>
        {
            dropped(Kind::Access, "missing_message_authenticator");
            return false;
        }
        MessageAuthenticator::Absent => {}
    }
    if packet.code == Code::StatusServer {
        let mut w = PacketWriter::new(Code::AccessAccept, packet.identifier);
        w.message_authenticator();
        if let Ok(reply) = crypto::finish_reply(w, &nas.secret, &packet.authenticator) {
            send(socket, &reply, peer).await;
        }
        return true;
    }

    let key = (peer, packet.identifier, packet.authenticator);
    match shared.replies.begin(key, Instant::now()) {
        Begin::New => {}
        Begin::Cached(reply) => {
            ::metrics::counter!(metrics::DUPLICATES_TOTAL, "kind" => "access").increment(1);
            tracing::debug!("Answered a retransmitted Access-Request from the reply cache.");
            send(socket, &reply, peer).await;
            return true;
        }
        Begin::InProgress => {
            ::metrics::counter!(metrics::DUPLICATES_TOTAL, "kind" => "access").increment(1);
            dropped(Kind::Access, "in_progress");
            return false;
        }
    }

    let decision = match auth::decide(shared, &packet, &nas).await {
        Ok(d) => d,
        Err(auth::Undecided(reason)) => {
            shared.replies.abort(&key);
            dropped(Kind::Access, reason);
            return false;
        }
    };
    tracing::Span::current().record("user", decision.address.as_deref().unwrap_or(""));
    let reply = match auth::reply(&packet, &nas, &decision) {
        Ok(r) => Arc::<[u8]>::from(r),
        Err(error) => {
            // A profile attribute too long for RADIUS: the directory holds bad data.
            tracing::warn!(%error, "Could not encode an Access-Accept; rejecting nothing, dropping.");
            shared.replies.abort(&key);
            dropped(Kind::Access, "encode_error");
            return false;
        }
    };
    shared.replies.complete(&key, reply.clone());

    let result = match decision.result {
        pampa_schemas::AuthResult::Accept => {
            shared.metrics.access_accept.increment(1);
            "accept"
        }
        pampa_schemas::AuthResult::Reject => {
            shared.metrics.access_reject.increment(1);
            "reject"
        }
    };
    tracing::debug!(result, method = decision.method.name(), reason = %decision.reason, "Decided an Access-Request.");

    // The audit event is queued just before the reply goes out (so a NAS's requests,
    // each sent after the last one's answer, are audited in order, whichever reader
    // took them) and published off the request path: a slow or
    // unavailable log must not slow or stop logins (at thousands of auths a second, an
    // fsync per reply would), and an auth decision is not billing data. The queue is
    // bounded, and every event lost to a full queue or a failed publish is counted in
    // `pampa_radius_audit_lost_total`, so the gap is visible. Accounting, which is
    // billing data, is the opposite: no reply until durable.
    if let Err(e) = shared
        .audit
        .try_send(auth::audit_event(&packet, peer.ip(), &decision))
    {
        let reason = match e {
            mpsc::error::TrySendError::Full(_) => "queue_full",
            mpsc::error::TrySendError::Closed(_) => "publish_failed",
        };
        ::metrics::counter!(metrics::AUDIT_LOST_TOTAL, "reason" => reason).increment(1);
    }
    send(socket, &reply, peer).await;
    true
}

/// One Accounting-Request: answered only once its event is durable. Returns whether a
/// reply was sent now; a record to store is queued for `acct_writer` with its reply and
/// `permit`, and answered from there.
async fn handle_accounting<D: RadiusDirectory>(
    shared: &Arc<Shared<D>>,
    socket: &Arc<UdpSocket>,
    data: &[u8],
    peer: SocketAddr,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> bool {
    let Some((packet, nas)) = admit(shared, Kind::Accounting, data, peer).await else {
        return false;
    };
    if packet.code == Code::StatusServer {
        if crypto::verify_message_authenticator(&packet, &nas.secret) != MessageAuthenticator::Valid
        {
            dropped(Kind::Accounting, "bad_message_authenticator");
            return false;
        }
        let w = PacketWriter::new(Code::AccountingResponse, packet.identifier);
        if let Ok(reply) = crypto::finish_reply(w, &nas.secret, &packet.authenticator) {
            send(socket, &reply, peer).await;
        }
        return true;
    }
    if packet.code != Code::AccountingRequest {
        dropped(Kind::Accounting, "unexpected_code");
        return false;
    }
    // The authenticator covers the whole packet, so it also stands for any
    // Message-Authenticator the NAS added.
    if !crypto::verify_accounting_request(&packet, &nas.secret) {
        dropped(Kind::Accounting, "bad_authenticator");
        return false;
    }
    let reply = || {
        let mut w = PacketWriter::new(Code::AccountingResponse, packet.identifier);
        auth::copy_proxy_state(&packet, &mut w).ok()?;
        crypto::finish_reply(w, &nas.secret, &packet.authenticator).ok()
    };
    let record = match acct::record_of(&packet, peer.ip(), Utc::now()) {
        Err(e) => {
            dropped(Kind::Accounting, malformed_reason(e.reason()));
            return false;
        }
        Ok(record) => record,
    };
    let Some(reply) = reply() else {
        dropped(Kind::Accounting, "encode_error");
        return false;
    };
    let Some(record) = record else {
        // A status we do not record (Tunnel-Start, Failed…) is still answered: left
        // unanswered the NAS would retransmit it forever and may stall its queue.
        send(socket, &reply, peer).await;
        ::metrics::counter!(metrics::REQUESTS_TOTAL, "kind" => "accounting", "result" => "ignored")
            .increment(1);
        return true;
    };
    let key = acct::dedup_key(&packet, peer.ip(), &record);
    let mut envelope = Envelope::root(acct::event_id(&key), acct::SOURCE, record);
    envelope.correlation_id = acct::session_correlation_id(&envelope.payload);
    envelope.occurred_at = envelope.payload.event_time;
    tracing::Span::current().record("event_id", envelope.id.as_str());
    let event = match OutgoingEvent::from_envelope(&envelope) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "Could not encode an access.acct event.");
            dropped(Kind::Accounting, "encode_error");
            return false;
        }
    };
    let Some(permit) = permit.take() else {
        return false;
    };
    let pending = acct_writer::PendingRecord {
        record: envelope.payload,
        reply,
        peer,
        socket: socket.clone(),
        received: Instant::now(),
        permit,
    };
    if shared.acct.try_send((event, pending)).is_err() {
        dropped(Kind::Accounting, "overloaded");
    }
    false
}
