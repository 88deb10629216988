//! The server end to end over UDP on loopback: a fake directory, the embedded event log
//! in a temporary directory, and a tiny NAS written here with the crate's own codec.
//!
//! Sources: 127.0.0.1 is a NAS that requires Message-Authenticator, 127.0.0.3 a legacy
//! NAS that does not, and 127.0.0.2 is not a NAS.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::DateTime;
use pampa_bus::{BusConfig, EventLog};
use pampa_radius::{
    crypto::{self, MessageAuthenticator},
    directory::LookupError,
    mschap,
    packet::{attr, Code, Packet, PacketWriter},
    NasClient, Radius, RadiusConfig, RadiusDirectory, RadiusProfile, RadiusUser,
};
use pampa_schemas::{decode, decode_auths, AccessAcct, AccessAuth, AcctStatus, AuthResult};
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle};

const SECRET: &[u8] = b"testing123";

#[derive(Default)]
struct Calls {
    user: AtomicUsize,
    verify: AtomicUsize,
}

#[derive(Clone, Default)]
struct FakeDirectory {
    calls: Arc<Calls>,
}

fn user(address: &str, password: &str, chap: bool, profile: RadiusProfile) -> RadiusUser {
    RadiusUser {
        address: address.into(),
        password_hash: format!("fake${password}"),
        chap_secret: chap.then(|| password.into()),
        profile,
    }
}

impl RadiusDirectory for FakeDirectory {
    async fn nas(&self, ip: IpAddr) -> Result<Option<Arc<NasClient>>, LookupError> {
        Ok(match ip {
            IpAddr::V4(ip) if ip == Ipv4Addr::new(127, 0, 0, 1) => Some(NasClient {
                network: "127.0.0.1/32".into(),
                secret: SECRET.to_vec(),
                require_message_authenticator: true,
            }),
            IpAddr::V4(ip) if ip == Ipv4Addr::new(127, 0, 0, 3) => Some(NasClient {
                network: "127.0.0.3/32".into(),
                secret: SECRET.to_vec(),
                require_message_authenticator: false,
            }),
            _ => None,
        }
        .map(Arc::new))
    }

    async fn user(&self, address: &str) -> Result<Option<Arc<RadiusUser>>, LookupError> {
        self.calls.user.fetch_add(1, Ordering::SeqCst);
        Ok(match address {
            "alice@example.org" => Some(user(
                address,
                "alicepw",
                true,
                RadiusProfile {
                    session_timeout: Some(3600),
                    idle_timeout: Some(600),
                    framed_ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
                    class: Some("gold".into()),
                    simultaneous_use: Some(1),
                    ..RadiusProfile::default()
                },
            )),
            "bob@example.org" => Some(user(
                address,
                "bobpw",
                false,
                RadiusProfile {
                    framed_pool: Some("pool-a".into()),
                    ..RadiusProfile::default()
                },
            )),
            "carol@example.org" => Some(user(address, "carolpw", false, RadiusProfile::default())),
            _ => None,
        }
        .map(Arc::new))
    }

    fn verify_password(&self, user: &RadiusUser, password: &str) -> bool {
        self.calls.verify.fetch_add(1, Ordering::SeqCst);
        user.password_hash == format!("fake${password}")
    }
}

struct Server {
    handle: pampa_radius::RadiusHandle<FakeDirectory>,
    auth: SocketAddr,
    acct: SocketAddr,
    log: EventLog,
    calls: Arc<Calls>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&BusConfig::default(), dir.path())
            .await
            .unwrap();
        let mut server = Server::on(log).await;
        server._dir = Some(dir);
        server
    }

    /// A server on an existing log, as after a restart.
    async fn on(log: EventLog) -> Server {
        Server::with(log, |_| {}).await
    }

    async fn with(log: EventLog, tune: impl FnOnce(&mut RadiusConfig)) -> Server {
        let mut config = RadiusConfig {
            auth_listen: "127.0.0.1:0".into(),
            acct_listen: "127.0.0.1:0".into(),
            default_realm: Some("example.org".into()),
            ..RadiusConfig::default()
        };
        tune(&mut config);
        let directory = FakeDirectory::default();
        let calls = directory.calls.clone();
        let radius = Radius::new(config, directory, log.clone(), Duration::from_secs(5));
        let handle = radius.handle();
        let sockets = radius.bind().await.unwrap();
        let (auth, acct) = (sockets.auth_addr().unwrap(), sockets.acct_addr().unwrap());
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(radius.serve(sockets, rx));
        Server {
            handle,
            auth,
            acct,
            log,
            calls,
            shutdown,
            task,
            _dir: None,
        }
    }

    async fn stop(self) -> (EventLog, Option<tempfile::TempDir>) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns on shutdown")
            .unwrap();
        (self.log, self._dir)
    }

    async fn events(&self, subject: &str) -> Vec<pampa_bus::StoredEvent> {
        self.log
            .replay(subject, DateTime::UNIX_EPOCH)
            .await
            .unwrap()
    }

    async fn acct_events(&self) -> Vec<AccessAcct> {
        self.events("access.acct")
            .await
            .iter()
            .map(|e| decode::<AccessAcct>(&e.payload).unwrap().payload)
            .collect()
    }

    /// Waits until `n` audited decisions are stored (they are published off the request
    /// path, many to an `access.auth` event).
    async fn wait_audit(&self, n: usize) -> Vec<AccessAuth> {
        for _ in 0..500 {
            let decisions: Vec<AccessAuth> = self
                .events("access.auth")
                .await
                .iter()
                .flat_map(|e| decode_auths(&e.payload).unwrap().payload.decisions)
                .collect();
            if decisions.len() >= n {
                assert!(decisions.iter().all(|d| d.time.is_some()), "{decisions:?}");
                return decisions;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} audited decisions");
    }
}

/// A NAS: one UDP socket, a secret, and a counter for identifiers and authenticators.
struct Nas {
    socket: UdpSocket,
    next: AtomicU8,
    seed: AtomicU8,
}

impl Nas {
    async fn at(ip: [u8; 4]) -> Nas {
        Nas {
            socket: UdpSocket::bind(SocketAddr::from((ip, 0))).await.unwrap(),
            next: AtomicU8::new(1),
            seed: AtomicU8::new(1),
        }
    }

    fn id(&self) -> u8 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// An Access-Request with a fresh identifier and authenticator.
    fn access_request(
        &self,
        user: &str,
        message_authenticator: bool,
        add: impl FnOnce(&mut PacketWriter, &[u8; 16]),
    ) -> (Vec<u8>, [u8; 16]) {
        let id = self.id();
        let mut authenticator = [0x5a; 16];
        authenticator[0] = self.seed.fetch_add(1, Ordering::SeqCst);
        let mut w = PacketWriter::new(Code::AccessRequest, id);
        w.push(attr::USER_NAME, user.as_bytes()).unwrap();
        w.push(attr::NAS_IDENTIFIER, b"test-nas").unwrap();
        w.push_u32(attr::NAS_PORT, 7);
        add(&mut w, &authenticator);
        if message_authenticator {
            // Where radclient puts it: last, as `Message-Authenticator = 0x00` in its input.
            w.message_authenticator();
        }
        (
            crypto::finish_access_request(w, SECRET, &authenticator).unwrap(),
            authenticator,
        )
    }

    fn pap(&self, user: &str, password: &str) -> (Vec<u8>, [u8; 16]) {
        self.access_request(user, true, |w, auth| {
            let hidden = crypto::hide_password(password.as_bytes(), SECRET, auth).unwrap();
            w.push(attr::USER_PASSWORD, &hidden).unwrap();
        })
    }

    fn accounting(&self, attrs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut w = PacketWriter::new(Code::AccountingRequest, self.id());
        for (t, v) in attrs {
            w.push(*t, v).unwrap();
        }
        crypto::finish_accounting_request(w, SECRET).unwrap()
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.unwrap();
    }

    async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Sends and waits for the reply, checking its authenticators as a NAS does.
    async fn exchange(&self, to: SocketAddr, request: &(Vec<u8>, [u8; 16])) -> Vec<u8> {
        self.send(to, &request.0).await;
        let reply = self.recv(Duration::from_secs(5)).await.expect("a reply");
        let p = Packet::decode(&reply).unwrap();
        assert!(
            crypto::verify_reply(&p, SECRET, &request.1),
            "response authenticator"
        );
        assert_eq!(p.identifier, request.0[1]);
        reply
    }

    async fn account(&self, to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let auth: [u8; 16] = bytes[4..20].try_into().unwrap();
        let reply = self.exchange(to, &(bytes.to_vec(), auth)).await;
        assert_eq!(
            Packet::decode(&reply).unwrap().code,
            Code::AccountingResponse
        );
        reply
    }

    /// No reply: a drop can only be seen as silence, so this waits a bounded time.
    async fn expect_silence(&self) {
        assert!(
            self.recv(Duration::from_millis(400)).await.is_none(),
            "expected the packet to be dropped"
        );
    }
}

fn decoded(reply: &[u8]) -> Packet<'_> {
    Packet::decode(reply).unwrap()
}

fn u32v(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

#[tokio::test]
async fn pap_accepts_with_profile_and_rejects_with_reply_message() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;

    let request = nas.pap("alice@example.org", "alicepw");
    let reply = nas.exchange(server.auth, &request).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessAccept);
    assert_eq!(
        crypto::verify_reply_message_authenticator(&p, SECRET, &request.1),
        MessageAuthenticator::Valid
    );
    assert_eq!(
        p.attributes().next().unwrap().typ,
        attr::MESSAGE_AUTHENTICATOR
    );
    assert_eq!(p.u32(attr::SESSION_TIMEOUT).unwrap(), Some(3600));
    assert_eq!(p.u32(attr::IDLE_TIMEOUT).unwrap(), Some(600));
    assert_eq!(
        p.ipv4(attr::FRAMED_IP_ADDRESS).unwrap(),
        Some(Ipv4Addr::new(10, 0, 0, 5))
    );
    assert_eq!(p.get(attr::CLASS), Some(&b"gold"[..]));

    let reply = nas
        .exchange(server.auth, &nas.pap("alice@example.org", "nope"))
        .await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessReject);
    assert_eq!(
        p.text(attr::REPLY_MESSAGE).unwrap(),
        Some("Authentication failed")
    );

    let reply = nas
        .exchange(server.auth, &nas.pap("nobody@example.org", "x"))
        .await;
    assert_eq!(decoded(&reply).code, Code::AccessReject);

    // A bare local part gets the default realm; the pool comes back when no fixed IP.
    let reply = nas.exchange(server.auth, &nas.pap("bob", "bobpw")).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessAccept);
    assert_eq!(p.get(attr::FRAMED_POOL), Some(&b"pool-a"[..]));

    // Again: answered from the password cache, argon2 not run.
    let verified = server.calls.verify.load(Ordering::SeqCst);
    let reply = nas
        .exchange(server.auth, &nas.pap("alice@example.org", "alicepw"))
        .await;
    assert_eq!(decoded(&reply).code, Code::AccessAccept);
    assert_eq!(server.calls.verify.load(Ordering::SeqCst), verified);

    let audit = server.wait_audit(5).await;
    assert_eq!(audit.len(), 5);
    let results: Vec<_> = audit
        .iter()
        .map(|a| (a.result, a.reason.as_str()))
        .collect();
    assert!(results.contains(&(AuthResult::Reject, "bad password")));
    assert!(results.contains(&(AuthResult::Reject, "unknown user")));
    let bob = audit.iter().find(|a| a.user == "bob").unwrap();
    assert_eq!(bob.address.as_deref(), Some("bob@example.org"));
    assert_eq!(bob.method, "pap");
    assert_eq!(bob.nas_identifier.as_deref(), Some("test-nas"));
    for event in server.events("access.auth").await {
        let bytes = &event.payload;
        for secret in [&b"alicepw"[..], b"bobpw", b"nope"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "no password in audit"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn chap_and_mschapv2_need_a_cleartext_secret() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;

    // CHAP with a CHAP-Challenge, and with the Request Authenticator as the challenge.
    let with_challenge = nas.access_request("alice@example.org", true, |w, _| {
        let challenge = [9u8; 16];
        let mut value = vec![3];
        value.extend_from_slice(&crypto::chap_response(3, b"alicepw", &challenge));
        w.push(attr::CHAP_PASSWORD, &value).unwrap();
        w.push(attr::CHAP_CHALLENGE, &challenge).unwrap();
    });
    assert_eq!(
        decoded(&nas.exchange(server.auth, &with_challenge).await).code,
        Code::AccessAccept
    );
    let radclient_style = nas.access_request("alice", true, |w, auth| {
        let mut value = vec![1];
        value.extend_from_slice(&crypto::chap_response(1, b"alicepw", auth));
        w.push(attr::CHAP_PASSWORD, &value).unwrap();
    });
    assert_eq!(
        decoded(&nas.exchange(server.auth, &radclient_style).await).code,
        Code::AccessAccept
    );
    let wrong = nas.access_request("alice", true, |w, auth| {
        let mut value = vec![1];
        value.extend_from_slice(&crypto::chap_response(1, b"wrong", auth));
        w.push(attr::CHAP_PASSWORD, &value).unwrap();
    });
    assert_eq!(
        decoded(&nas.exchange(server.auth, &wrong).await).code,
        Code::AccessReject
    );
    let no_secret = nas.access_request("bob", true, |w, auth| {
        let mut value = vec![1];
        value.extend_from_slice(&crypto::chap_response(1, b"bobpw", auth));
        w.push(attr::CHAP_PASSWORD, &value).unwrap();
    });
    let reply = nas.exchange(server.auth, &no_secret).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessReject);
    assert!(p
        .text(attr::REPLY_MESSAGE)
        .unwrap()
        .unwrap()
        .contains("cleartext secret"));

    // MS-CHAPv2, as a peer computes it.
    let mschap = |password: &'static str| {
        nas.access_request("alice@example.org", true, move |w, _| {
            let auth_challenge = [0x42u8; 16];
            let peer_challenge = [0x17u8; 16];
            let nt = mschap::nt_response(
                &auth_challenge,
                &peer_challenge,
                b"alice@example.org",
                password,
            );
            let mut response = vec![5, 0];
            response.extend_from_slice(&peer_challenge);
            response.extend_from_slice(&[0; 8]);
            response.extend_from_slice(&nt);
            w.push_vendor(
                attr::VENDOR_MICROSOFT,
                attr::MS_CHAP_CHALLENGE,
                &auth_challenge,
            )
            .unwrap();
            w.push_vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE, &response)
                .unwrap();
        })
    };
    let reply = nas.exchange(server.auth, &mschap("alicepw")).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessAccept);
    let success = p
        .vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_SUCCESS)
        .unwrap()
        .unwrap();
    assert_eq!(success[0], 5);
    assert_eq!(&success[1..3], b"S=");
    assert_eq!(success.len(), 43);
    let reply = nas.exchange(server.auth, &mschap("bad")).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessReject);
    assert!(p
        .vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_ERROR)
        .unwrap()
        .is_some());

    let audit = server.wait_audit(6).await;
    assert!(audit
        .iter()
        .any(|a| a.method == "chap" && a.reason.contains("cleartext")));
    assert!(audit
        .iter()
        .any(|a| a.method == "mschapv2" && a.result == AuthResult::Accept));
    server.stop().await;
}

#[tokio::test]
async fn message_authenticator_and_unknown_nas_are_enforced_by_dropping() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;

    // Missing Message-Authenticator: dropped.
    let (bytes, _) = nas.access_request("alice", false, |w, auth| {
        let hidden = crypto::hide_password(b"alicepw", SECRET, auth).unwrap();
        w.push(attr::USER_PASSWORD, &hidden).unwrap();
    });
    nas.send(server.auth, &bytes).await;
    nas.expect_silence().await;

    // Wrong Message-Authenticator (one flipped byte in it): dropped.
    let (mut bytes, _) = nas.pap("alice", "alicepw");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    nas.send(server.auth, &bytes).await;
    nas.expect_silence().await;

    // Garbage: dropped, and the server lives on.
    nas.send(server.auth, &[1, 2, 0, 200, 9, 9]).await;
    nas.expect_silence().await;

    // A legacy NAS that opted out may omit it.
    let legacy = Nas::at([127, 0, 0, 3]).await;
    let request = legacy.access_request("alice", false, |w, auth| {
        let hidden = crypto::hide_password(b"alicepw", SECRET, auth).unwrap();
        w.push(attr::USER_PASSWORD, &hidden).unwrap();
    });
    let reply = legacy.exchange(server.auth, &request).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessAccept);
    // ...and still gets one in the reply.
    assert_eq!(
        crypto::verify_reply_message_authenticator(&p, SECRET, &request.1),
        MessageAuthenticator::Valid
    );

    // Not a NAS: silence on both ports, even with a valid packet.
    let stranger = Nas::at([127, 0, 0, 2]).await;
    let (bytes, _) = stranger.pap("alice", "alicepw");
    stranger.send(server.auth, &bytes).await;
    let start = stranger.accounting(&[
        (attr::ACCT_STATUS_TYPE, u32v(1)),
        (attr::ACCT_SESSION_ID, b"x".to_vec()),
    ]);
    stranger.send(server.acct, &start).await;
    stranger.expect_silence().await;

    // A bad accounting authenticator: dropped, nothing recorded.
    let mut bad = nas.accounting(&[
        (attr::ACCT_STATUS_TYPE, u32v(1)),
        (attr::ACCT_SESSION_ID, b"y".to_vec()),
    ]);
    bad[4] ^= 1;
    nas.send(server.acct, &bad).await;
    nas.expect_silence().await;
    assert!(server.events("access.acct").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_retransmission_gets_the_cached_reply_and_is_decided_once() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;
    let request = nas.pap("carol", "carolpw");
    let first = nas.exchange(server.auth, &request).await;
    let lookups = server.calls.user.load(Ordering::SeqCst);
    let second = nas.exchange(server.auth, &request).await;
    assert_eq!(first, second);
    assert_eq!(decoded(&first).code, Code::AccessAccept);
    assert_eq!(
        server.calls.user.load(Ordering::SeqCst),
        lookups,
        "not processed twice"
    );
    // The same identifier with a new authenticator is a new request.
    nas.next.store(request.0[1], Ordering::SeqCst);
    let again = nas.pap("carol", "carolpw");
    assert_eq!(again.0[1], request.0[1]);
    let _ = nas.exchange(server.auth, &again).await;
    assert_eq!(server.calls.user.load(Ordering::SeqCst), lookups + 1);
    server.wait_audit(2).await;
    server.stop().await;
}

fn session(
    status: u32,
    id: &str,
    user: &str,
    delay: u32,
    extra: &[(u8, Vec<u8>)],
) -> Vec<(u8, Vec<u8>)> {
    let mut attrs = vec![
        (attr::ACCT_STATUS_TYPE, u32v(status)),
        (attr::ACCT_SESSION_ID, id.as_bytes().to_vec()),
        (attr::USER_NAME, user.as_bytes().to_vec()),
        (attr::NAS_PORT, u32v(7)),
        (attr::ACCT_DELAY_TIME, u32v(delay)),
    ];
    attrs.extend_from_slice(extra);
    attrs
}

#[tokio::test]
async fn accounting_is_recorded_once_per_record_and_drives_simultaneous_use() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;
    let login = |nas: &Nas| nas.pap("alice", "alicepw");

    assert_eq!(
        decoded(&nas.exchange(server.auth, &login(&nas)).await).code,
        Code::AccessAccept
    );

    // Start, then its retransmission (new identifier, higher Acct-Delay-Time).
    nas.account(
        server.acct,
        &nas.accounting(&session(1, "s1", "alice", 0, &[])),
    )
    .await;
    nas.account(
        server.acct,
        &nas.accounting(&session(1, "s1", "alice", 3, &[])),
    )
    .await;

    // alice may have one session: a second login is refused.
    let reply = nas.exchange(server.auth, &login(&nas)).await;
    let p = decoded(&reply);
    assert_eq!(p.code, Code::AccessReject);
    assert!(p
        .text(attr::REPLY_MESSAGE)
        .unwrap()
        .unwrap()
        .contains("Too many sessions"));

    let interim = [
        (attr::ACCT_SESSION_TIME, u32v(60)),
        (attr::ACCT_INPUT_OCTETS, u32v(100)),
        (attr::ACCT_INPUT_GIGAWORDS, u32v(1)),
        (attr::ACCT_OUTPUT_OCTETS, u32v(200)),
    ];
    nas.account(
        server.acct,
        &nas.accounting(&session(3, "s1", "alice", 0, &interim)),
    )
    .await;
    nas.account(
        server.acct,
        &nas.accounting(&session(3, "s1", "alice", 5, &interim)),
    )
    .await;
    let stop = [
        (attr::ACCT_SESSION_TIME, u32v(120)),
        (attr::ACCT_INPUT_OCTETS, u32v(500)),
        (attr::ACCT_INPUT_GIGAWORDS, u32v(1)),
        (attr::ACCT_OUTPUT_OCTETS, u32v(900)),
        (attr::ACCT_TERMINATE_CAUSE, u32v(1)),
    ];
    nas.account(
        server.acct,
        &nas.accounting(&session(2, "s1", "alice", 0, &stop)),
    )
    .await;
    nas.account(
        server.acct,
        &nas.accounting(&session(2, "s1", "alice", 9, &stop)),
    )
    .await;

    let events = server.acct_events().await;
    let statuses: Vec<_> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            AcctStatus::Start,
            AcctStatus::InterimUpdate,
            AcctStatus::Stop
        ]
    );
    assert_eq!(events[1].input_octets, Some((1u64 << 32) + 100));
    assert_eq!(events[2].terminate_cause.as_deref(), Some("User-Request"));
    let stored = server.events("access.acct").await;
    assert_eq!(
        stored[0].header("Correlation-Id"),
        stored[2].header("Correlation-Id")
    );

    // Stopped: alice may log in again.
    assert_eq!(
        decoded(&nas.exchange(server.auth, &login(&nas)).await).code,
        Code::AccessAccept
    );

    // Usage from the same events.
    let month = events[0].event_time;
    use chrono::Datelike;
    let usage = pampa_radius::Usage::for_user_month(
        &events,
        "alice@example.org",
        month.year(),
        month.month(),
    );
    // The records name her `alice`; the report normalizes with the realm.
    assert_eq!(usage.sessions, 0);
    let mut b =
        pampa_radius::UsageBuilder::new("alice", Some("example.org"), month.year(), month.month());
    events.iter().for_each(|e| b.add(e));
    let usage = b.finish();
    assert_eq!((usage.sessions, usage.time_online_seconds), (1, 120));
    assert_eq!(
        (usage.input_octets, usage.output_octets),
        ((1u64 << 32) + 500, 900)
    );
    server.stop().await;
}

#[tokio::test]
async fn accounting_on_closes_the_nas_sessions_and_restart_replays_them() {
    let server = Server::start().await;
    let nas = Nas::at([127, 0, 0, 1]).await;
    nas.account(
        server.acct,
        &nas.accounting(&session(1, "s9", "alice", 0, &[])),
    )
    .await;
    assert_eq!(
        decoded(
            &nas.exchange(server.auth, &nas.pap("alice", "alicepw"))
                .await
        )
        .code,
        Code::AccessReject
    );

    // A restarted server rebuilds the open session from the log.
    let (log, dir) = server.stop().await;
    let mut server = Server::on(log).await;
    server._dir = dir;
    assert_eq!(
        decoded(
            &nas.exchange(server.auth, &nas.pap("alice", "alicepw"))
                .await
        )
        .code,
        Code::AccessReject
    );

    // The NAS reboots: Accounting-On closes every session it had.
    let on = nas.accounting(&[
        (attr::ACCT_STATUS_TYPE, u32v(7)),
        (attr::ACCT_DELAY_TIME, u32v(0)),
    ]);
    nas.account(server.acct, &on).await;
    let on_again = nas.accounting(&[
        (attr::ACCT_STATUS_TYPE, u32v(7)),
        (attr::ACCT_DELAY_TIME, u32v(0)),
    ]);
    nas.account(server.acct, &on_again).await;
    assert_eq!(
        decoded(
            &nas.exchange(server.auth, &nas.pap("alice", "alicepw"))
                .await
        )
        .code,
        Code::AccessAccept
    );
    let statuses: Vec<_> = server
        .acct_events()
        .await
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, [AcctStatus::Start, AcctStatus::AccountingOn]);
    server.stop().await;
}

/// Whether a rendered Prometheus line of `name` has every `key="value"` label given.
fn has_metric(rendered: &str, name: &str, labels: &[&str]) -> bool {
    rendered
        .lines()
        .any(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
}

/// The metric names are the crate's constants, with bounded labels; drops are observed
/// through their counters instead of by waiting for silence.
#[test]
fn drops_decisions_and_records_are_counted() {
    use pampa_radius::metrics::*;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let server = Server::start().await;
            let nas = Nas::at([127, 0, 0, 1]).await;
            nas.send(server.auth, &[1, 2, 0, 200, 9, 9]).await;
            let mut truncated = vec![1, 2, 0, 200];
            truncated.extend_from_slice(&[0; 30]);
            nas.send(server.auth, &truncated).await;
            let (bytes, _) = nas.access_request("alice", false, |_, _| {});
            nas.send(server.auth, &bytes).await;
            let stranger = Nas::at([127, 0, 0, 2]).await;
            stranger
                .send(server.auth, &stranger.pap("alice", "x").0)
                .await;
            let reply = nas.exchange(server.auth, &nas.pap("bob", "bobpw")).await;
            assert_eq!(decoded(&reply).code, Code::AccessAccept);
            nas.account(
                server.acct,
                &nas.accounting(&session(1, "m1", "bob", 0, &[])),
            )
            .await;
            nas.account(
                server.acct,
                &nas.accounting(&session(1, "m1", "bob", 4, &[])),
            )
            .await;

            let expected: [(&str, &[&str]); 10] = [
                (DROPPED_TOTAL, &["reason=\"malformed_too_short\""]),
                (
                    DROPPED_TOTAL,
                    &["kind=\"access\"", "reason=\"malformed_truncated\""],
                ),
                (DROPPED_TOTAL, &["reason=\"missing_message_authenticator\""]),
                (DROPPED_TOTAL, &["reason=\"unknown_nas\""]),
                (REQUESTS_TOTAL, &["kind=\"access\"", "result=\"accept\""]),
                (
                    REQUESTS_TOTAL,
                    &["kind=\"accounting\"", "result=\"recorded\""],
                ),
                (
                    REQUESTS_TOTAL,
                    &["kind=\"accounting\"", "result=\"duplicate\""],
                ),
                (NAS_REQUESTS_TOTAL, &["nas=\"127.0.0.1/32\""]),
                (REQUEST_DURATION_SECONDS, &["kind=\"access\""]),
                (ACTIVE_SESSIONS, &[]),
            ];
            let mut rendered = String::new();
            for _ in 0..500 {
                rendered = handle.render();
                if expected.iter().all(|(n, l)| has_metric(&rendered, n, l)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (name, labels) in expected {
                assert!(
                    has_metric(&rendered, name, labels),
                    "{name} {labels:?} in\n{rendered}"
                );
            }
            assert!(
                !rendered.contains("127.0.0.2"),
                "no source address as a label"
            );
            server.stop().await;
        })
    });
}

/// With `follow_interval`, a second process sharing the log sees the sessions the first
/// one recorded, and its own only once they are in the log.
#[tokio::test]
async fn processes_sharing_a_log_follow_each_others_sessions() {
    let first = Server::start().await;
    let follow = |c: &mut RadiusConfig| c.follow_interval = Some(Duration::from_millis(20));
    let second = Server::with(first.log.clone(), follow).await;
    let nas = Nas::at([127, 0, 0, 1]).await;
    nas.account(
        first.acct,
        &nas.accounting(&session(1, "f1", "alice", 0, &[])),
    )
    .await;
    nas.account(
        second.acct,
        &nas.accounting(&session(1, "f2", "bob", 0, &[])),
    )
    .await;
    for _ in 0..500 {
        if second.handle.active_sessions().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(second.handle.sessions_of("alice"), 1);
    assert_eq!(second.handle.sessions_of("bob@example.org"), 1);
    assert!(second.handle.is_listening());
    let reply = nas
        .exchange(second.auth, &nas.pap("alice", "alicepw"))
        .await;
    assert_eq!(decoded(&reply).code, Code::AccessReject);
    // Without following, the first process knows only its own.
    assert_eq!(first.handle.active_sessions().len(), 1);
    second.stop().await;
    first.stop().await;
}

/// Runs Debian's radclient (freeradius-utils) against `to`, with `input` as its
/// attribute list, and returns what it printed.
fn radclient(to: SocketAddr, command: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("radclient")
        .args([
            "-x",
            "-r",
            "1",
            "-t",
            "3",
            &to.to_string(),
            command,
            "testing123",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("radclient runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The real client NASes are tested with: PAP, CHAP, accounting and Status-Server. The
/// end-to-end suite requires radclient; here it is used when installed.
#[tokio::test]
async fn radclient_interoperates() {
    if std::process::Command::new("radclient")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("radclient is not installed (Debian's freeradius-utils); skipping");
        return;
    }
    let server = Server::start().await;
    let (auth, acct) = (server.auth, server.acct);
    let run = |to, command: &'static str, input: &'static str| {
        tokio::task::spawn_blocking(move || radclient(to, command, input))
    };
    let out = run(
        auth,
        "auth",
        "User-Name = \"alice\", User-Password = \"alicepw\", Message-Authenticator = 0x00\n",
    )
    .await
    .unwrap();
    assert!(out.contains("Received Access-Accept"), "{out}");
    assert!(out.contains("Framed-IP-Address = 10.0.0.5"), "{out}");
    let out = run(
        auth,
        "auth",
        "User-Name = \"alice\", User-Password = \"wrong\", Message-Authenticator = 0x00\n",
    )
    .await
    .unwrap();
    assert!(out.contains("Received Access-Reject"), "{out}");
    let out = run(
        auth,
        "auth",
        "User-Name = \"alice\", CHAP-Password = \"alicepw\", Message-Authenticator = 0x00\n",
    )
    .await
    .unwrap();
    assert!(out.contains("Received Access-Accept"), "{out}");
    let out = run(
        acct,
        "acct",
        "User-Name = \"alice\", Acct-Status-Type = Start, Acct-Session-Id = \"rc1\", \
         Acct-Input-Gigawords = 1, Acct-Input-Octets = 5\n",
    )
    .await
    .unwrap();
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let out = run(auth, "status", "Message-Authenticator = 0x00\n")
        .await
        .unwrap();
    assert!(out.contains("Received Access-Accept"), "{out}");
    let events = server.acct_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].input_octets, Some((1u64 << 32) + 5));
    server.stop().await;
}
