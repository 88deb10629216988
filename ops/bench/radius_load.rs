//! A lean RADIUS load generator for `ops/bench/radius.sh`: keeps a fixed window of
//! requests in flight and measures how fast a server answers them.
//!
//! ```text
//! cargo run --release --example radius_load -- auth HOST:PORT SECRET [options]
//! cargo run --release --example radius_load -- acct HOST:PORT SECRET [options]
//! ```
//!
//! - `auth`: `--requests N` PAP Access-Requests (Message-Authenticator first, User-Name,
//!   hidden User-Password, NAS-IP-Address, NAS-Port) cycling over `--users U` users
//!   `user{i}@DOMAIN` from `--first F` on, with the password `--password P` where `{i}`
//!   in P is replaced by the user's number.
//! - `acct`: the Start, then Interim-Update, then Stop records of `--sessions S` sessions
//!   (in three phases, so the records of one session are never in flight together), with
//!   session ids `TAG-0000000` (`--tag TAG`), so every run can send fresh records.
//!
//! Every request is built, authenticators and all, before the clock starts. Request k
//! goes out on socket `k % SOCKETS` with identifier `(k / SOCKETS) % 256`, so sending is
//! a copy of prepared bytes and a reply is matched by (socket, identifier) in O(1), and
//! its Response Authenticator checked (one MD5). `--window W` requests are in flight at
//! once, spread over `--sockets` UDP sockets (default: enough for at most 128 in flight
//! per socket, 256 identifiers each), all on one thread. A request unanswered after
//! `--timeout` seconds is sent again, the same bytes (a retransmission), up to
//! `--retries` times, then counted as lost.
//!
//! Prints one JSON object: requests, seconds (first send to last answer), per_second,
//! responses, accepts, rejects, lost, retransmits, stale (replies that matched no request
//! in flight or failed the authenticator check), cpu_seconds (this process, timed part).

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use pampa_radius::{
    crypto,
    packet::{acct_status, attr},
    Code, Packet, PacketWriter,
};
use tokio::{net::UdpSocket, time::sleep_until};

struct Options {
    kind: String,
    server: SocketAddr,
    secret: Vec<u8>,
    requests: usize,
    users: usize,
    first: usize,
    domain: String,
    password: String,
    sessions: usize,
    tag: String,
    window: usize,
    sockets: usize,
    timeout: Duration,
    retries: u32,
}

fn options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: radius_load auth|acct HOST:PORT SECRET [--requests N] [--users U] \
                 [--first F] [--domain D] [--password P] [--sessions S] [--tag T] [--window W] \
                 [--sockets K] [--timeout SECONDS] [--retries R]";
    let kind = args.next().context(usage)?;
    if kind != "auth" && kind != "acct" {
        bail!("{usage}");
    }
    let server = args.next().context(usage)?.parse().context("HOST:PORT")?;
    let secret = args.next().context(usage)?.into_bytes();
    let mut o = Options {
        kind,
        server,
        secret,
        requests: 10_000,
        users: 1000,
        first: 0,
        domain: "example.org".into(),
        password: "pw-{i}-x".into(),
        sessions: 1000,
        tag: "s".into(),
        window: 64,
        sockets: 0,
        timeout: Duration::from_secs(2),
        retries: 3,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--requests" => o.requests = value.parse()?,
            "--users" => o.users = value.parse()?,
            "--first" => o.first = value.parse()?,
            "--domain" => o.domain = value,
            "--password" => o.password = value,
            "--sessions" => o.sessions = value.parse()?,
            "--tag" => o.tag = value,
            "--window" => o.window = value.parse()?,
            "--sockets" => o.sockets = value.parse()?,
            "--timeout" => o.timeout = Duration::from_secs_f64(value.parse()?),
            "--retries" => o.retries = value.parse()?,
            _ => bail!("unknown option {flag}\n{usage}"),
        }
    }
    if o.window == 0 || o.users == 0 {
        bail!("--window and --users must be at least 1");
    }
    if o.sockets == 0 {
        o.sockets = o.window.div_ceil(128).max(1);
    }
    if o.window.div_ceil(o.sockets) > 255 {
        bail!("at most 255 requests in flight per socket: use more --sockets");
    }
    Ok(o)
}

/// splitmix64: unpredictable enough for Request Authenticators in a benchmark, and
/// distinct per run (seeded from the clock).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn authenticator(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.next().to_le_bytes());
        a[8..].copy_from_slice(&self.next().to_le_bytes());
        a
    }
}

/// One prepared request: its bytes and the authenticator its reply is checked with.
struct Request {
    bytes: Vec<u8>,
    authenticator: [u8; 16],
}

fn identifier(k: usize, sockets: usize) -> u8 {
    ((k / sockets) % 256) as u8
}

fn build(o: &Options) -> Result<Vec<Request>> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let mut rng = Rng(seed ^ u64::from(std::process::id()) << 32);
    let nas = Ipv4Addr::LOCALHOST.octets();
    let mut out = Vec::new();
    if o.kind == "auth" {
        for k in 0..o.requests {
            let i = (o.first + k) % o.users;
            let name = format!("user{i}@{}", o.domain);
            let password = o.password.replace("{i}", &i.to_string());
            let auth = rng.authenticator();
            let mut w = PacketWriter::new(Code::AccessRequest, identifier(k, o.sockets));
            w.message_authenticator();
            w.push_text(attr::USER_NAME, &name);
            w.push(
                attr::USER_PASSWORD,
                &crypto::hide_password(password.as_bytes(), &o.secret, &auth)?,
            )?;
            w.push(attr::NAS_IP_ADDRESS, &nas)?;
            w.push_u32(attr::NAS_PORT, (k % 4096) as u32);
            let bytes = crypto::finish_access_request(w, &o.secret, &auth)?;
            out.push(Request {
                bytes,
                authenticator: auth,
            });
        }
    } else {
        let phases = [
            acct_status::START,
            acct_status::INTERIM_UPDATE,
            acct_status::STOP,
        ];
        for status in phases {
            for s in 0..o.sessions {
                let k = out.len();
                let i = s % o.users;
                let ip = (s + 1) as u32;
                let mut w = PacketWriter::new(Code::AccountingRequest, identifier(k, o.sockets));
                w.push_u32(attr::ACCT_STATUS_TYPE, status);
                w.push_text(attr::ACCT_SESSION_ID, &format!("{}-{s:07}", o.tag));
                w.push_text(attr::USER_NAME, &format!("user{i}@{}", o.domain));
                w.push(attr::NAS_IP_ADDRESS, &nas)?;
                w.push_u32(attr::NAS_PORT, (s % 4096) as u32);
                w.push_u32(attr::FRAMED_IP_ADDRESS, 0x0a00_0000 | (ip & 0x00ff_ffff));
                w.push_u32(attr::ACCT_DELAY_TIME, 0);
                if status != acct_status::START {
                    let t: u32 = if status == acct_status::INTERIM_UPDATE {
                        60
                    } else {
                        120
                    };
                    w.push_u32(attr::ACCT_SESSION_TIME, t);
                    w.push_u32(attr::ACCT_INPUT_OCTETS, 1000 * t + s as u32);
                    w.push_u32(attr::ACCT_OUTPUT_OCTETS, 5000 * t + s as u32);
                }
                if status == acct_status::STOP {
                    w.push_u32(attr::ACCT_TERMINATE_CAUSE, 1); // User-Request
                }
                let bytes = crypto::finish_accounting_request(w, &o.secret)?;
                let mut authenticator = [0u8; 16];
                authenticator.copy_from_slice(&bytes[4..20]);
                out.push(Request {
                    bytes,
                    authenticator,
                });
            }
        }
    }
    Ok(out)
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

#[derive(Default)]
struct Counts {
    responses: u64,
    accepts: u64,
    rejects: u64,
    lost: u64,
    retransmits: u64,
    stale: u64,
}

/// The requests of one socket (k ≡ socket mod SOCKETS), sent in order with at most
/// `window` in flight; slot[id] is the request in flight with that identifier.
async fn drive(
    socket: UdpSocket,
    requests: &[Request],
    secret: &[u8],
    mine: Vec<usize>,
    window: usize,
    timeout: Duration,
    retries: u32,
) -> Result<Counts> {
    let mut c = Counts::default();
    // (request index, tries so far) per identifier.
    let mut slot: [Option<(usize, u32)>; 256] = [None; 256];
    // (deadline, identifier, request index), in send order, so deadlines are ordered.
    let mut timers: VecDeque<(Instant, u8, usize)> = VecDeque::with_capacity(window * 2);
    let mut next = 0; // into `mine`
    let mut in_flight = 0;
    let mut buf = [0u8; 4096];
    loop {
        // Fill the window, in order. The next request's identifier may still be busy
        // (only when an older request is being retransmitted): wait for it.
        while in_flight < window && next < mine.len() {
            let k = mine[next];
            let id = requests[k].bytes[1];
            if slot[id as usize].is_some() {
                break;
            }
            socket.send(&requests[k].bytes).await?;
            slot[id as usize] = Some((k, 0));
            timers.push_back((Instant::now() + timeout, id, k));
            in_flight += 1;
            next += 1;
        }
        if in_flight == 0 {
            return Ok(c);
        }
        // Expired timers; those whose request was answered are skipped.
        let now = Instant::now();
        while let Some(&(deadline, id, k)) = timers.front() {
            match slot[id as usize] {
                Some((sk, _)) if sk == k => {}
                _ => {
                    timers.pop_front();
                    continue;
                }
            }
            if deadline > now {
                break;
            }
            timers.pop_front();
            let (_, tries) = slot[id as usize].unwrap();
            if tries >= retries {
                slot[id as usize] = None;
                in_flight -= 1;
                c.lost += 1;
            } else {
                socket.send(&requests[k].bytes).await?;
                slot[id as usize] = Some((k, tries + 1));
                timers.push_back((now + timeout, id, k));
                c.retransmits += 1;
            }
        }
        if in_flight == 0 {
            continue;
        }
        let deadline = timers.front().map(|t| t.0).unwrap_or(now + timeout);
        let n = tokio::select! {
            r = socket.recv(&mut buf) => r?,
            _ = sleep_until(deadline.into()) => continue,
        };
        let mut len = n;
        // Then every reply already queued, without waiting again.
        loop {
            answer(
                &buf[..len],
                requests,
                secret,
                &mut slot,
                &mut in_flight,
                &mut c,
            );
            match socket.try_recv(&mut buf) {
                Ok(n) => len = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn answer(
    reply: &[u8],
    requests: &[Request],
    secret: &[u8],
    slot: &mut [Option<(usize, u32)>; 256],
    in_flight: &mut usize,
    c: &mut Counts,
) {
    let Ok(packet) = Packet::decode(reply) else {
        c.stale += 1;
        return;
    };
    let id = packet.identifier as usize;
    let Some((k, _)) = slot[id] else {
        c.stale += 1; // a late answer to a retransmitted request, or noise
        return;
    };
    if !crypto::verify_reply(&packet, secret, &requests[k].authenticator) {
        c.stale += 1;
        return;
    }
    slot[id] = None;
    *in_flight -= 1;
    c.responses += 1;
    match packet.code {
        Code::AccessAccept => c.accepts += 1,
        Code::AccessReject => c.rejects += 1,
        _ => {}
    }
}

fn main() -> Result<()> {
    let o = options()?;
    let requests = build(&o)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (counts, seconds, cpu) = rt.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..o.sockets {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            s.connect(o.server).await?;
            sockets.push(s);
        }
        let per_socket = o.window.div_ceil(o.sockets);
        let cpu = cpu_seconds();
        let start = Instant::now();
        let requests = &requests;
        let tasks = sockets.into_iter().enumerate().map(|(i, s)| {
            let mine: Vec<usize> = (i..requests.len()).step_by(o.sockets).collect();
            drive(
                s, requests, &o.secret, mine, per_socket, o.timeout, o.retries,
            )
        });
        let parts = futures::future::try_join_all(tasks).await?;
        let seconds = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let mut c = Counts::default();
        for p in parts {
            c.responses += p.responses;
            c.accepts += p.accepts;
            c.rejects += p.rejects;
            c.lost += p.lost;
            c.retransmits += p.retransmits;
            c.stale += p.stale;
        }
        anyhow::Ok((c, seconds, cpu))
    })?;
    let n = requests.len();
    println!(
        "{}",
        serde_json::json!({
            "kind": o.kind,
            "requests": n,
            "window": o.window,
            "sockets": o.sockets,
            "seconds": seconds,
            "per_second": n as f64 / seconds,
            "responses": counts.responses,
            "accepts": counts.accepts,
            "rejects": counts.rejects,
            "lost": counts.lost,
            "retransmits": counts.retransmits,
            "stale": counts.stale,
            "cpu_seconds": cpu,
            "cpu_us_per_request": 1e6 * cpu / n as f64,
        })
    );
    Ok(())
}
