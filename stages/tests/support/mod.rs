//! What the stage tests that need real DNS share: Debian's rbldnsd on a free loopback
//! port, a hand-written DNS query to wait for it, and a metrics recorder local to the
//! test's thread.
// Each test crate uses part of this module.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use pampa_stages::metrics::STAGE_ERRORS_TOTAL;

const RBLDNSD: &str = "/usr/sbin/rbldnsd";

/// DNS query types the tests wait with.
pub const A: u16 = 1;
/// TXT.
pub const TXT: u16 = 16;

/// rbldnsd in the foreground, killed on drop.
pub struct Rbldnsd {
    child: Child,
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rbldnsd {
    /// Serves `datasets` (`zone:type:file`) from `files` (name, contents), and returns
    /// once `probe` (name, query type) gets an answer.
    pub fn start(files: &[(&str, &str)], datasets: &[&str], probe: (&str, u16)) -> Rbldnsd {
        assert!(
            Path::new(RBLDNSD).exists(),
            "{RBLDNSD} is missing: install Debian's rbldnsd package (ops/test.sh does)"
        );
        // rbldnsd drops to `nobody` before it reads the zones, so the directory and the
        // files must be world-readable.
        let dir = tempfile::Builder::new()
            .prefix("pampa-rbldnsd")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        for (file, data) in files {
            let path = dir.path().join(file);
            fs::write(&path, data).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let query = dns_query(0x5a5a, probe.0, probe.1);
        let log_path = dir.path().join("rbldnsd.log");
        // The port is free when asked, but another process may take it before rbldnsd
        // binds; rbldnsd then exits at once, and we try another.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(RBLDNSD)
                .args(["-n", "-u", "nobody", "-c", "0", "-t", "5"])
                .args(["-b", &format!("127.0.0.1/{port}"), "-w"])
                .arg(dir.path())
                .args(datasets)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {RBLDNSD}: {e}"));
            let log = || fs::read_to_string(&log_path).unwrap_or_default();
            match wait_until_it_answers(&mut child, addr, &query) {
                Up::Answering => {
                    return Rbldnsd {
                        child,
                        addr,
                        _dir: dir,
                    }
                }
                Up::Exited => eprintln!("rbldnsd on port {port} exited at start:\n{}", log()),
                Up::Silent => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("rbldnsd on port {port} did not answer in 10 s:\n{}", log());
                }
            }
        }
        panic!("rbldnsd exited at start five times; see its logs above");
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Up {
    Answering,
    Exited,
    Silent,
}

/// Polls with a real query until rbldnsd answers it, or it exits, or 10 s pass.
fn wait_until_it_answers(child: &mut Child, addr: SocketAddr, query: &[u8]) -> Up {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Up::Exited;
        }
        let _ = socket.send_to(query, addr);
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            // Our id, a response, rcode NOERROR, and an answer.
            if len >= 12
                && buf[..2] == query[..2]
                && buf[2] & 0x80 != 0
                && buf[3] & 0x0f == 0
                && buf[7] > 0
            {
                return Up::Answering;
            }
        }
    }
    Up::Silent
}

/// A DNS query written by hand, so that waiting for the server does not depend on the
/// resolver under test.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Counters and gauges by `name{label="value",…}` (labels sorted).
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<BTreeMap<String, f64>>>);

struct Slot {
    key: String,
    store: Recorded,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut f64)) {
        f(self
            .store
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default());
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|v| *v += value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|v| *v = value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|v| *v += value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| *v -= value);
    }
    fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }
}

impl Recorded {
    /// The value of `name{labels}`, 0 if never recorded.
    pub fn get(&self, key: &str) -> f64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
    }

    /// Everything recorded, for failure messages.
    pub fn all(&self) -> BTreeMap<String, f64> {
        self.0.lock().unwrap().clone()
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Slot {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: self.clone(),
        })
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `f` on a single-threaded runtime with a recorder on this thread only (tests
/// run in parallel), and returns what it recorded.
pub fn run<T>(f: impl std::future::Future<Output = T>) -> (T, Recorded) {
    let recorded = Recorded::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorded, || runtime.block_on(f));
    (out, recorded)
}

/// The key of a stage's error counter of one kind.
pub fn errors(stage: &str, kind: &str) -> String {
    format!("{STAGE_ERRORS_TOTAL}{{kind=\"{kind}\",stage=\"{stage}\"}}")
}
