//! The listeners (587 with STARTTLS, 465 with implicit TLS) and what every session
//! shares.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use pampa_bus::EventLog;
use pampa_directory::Directory;
use pampa_ingest::{conn::Io, guard::FailureGuard};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{limits::SendingRates, metrics, session::Session, SubmissionConfig};

/// Why the submission role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmissionError {
    /// A listen address is taken or not ours.
    #[error("cannot listen for submission on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No usable certificate: AUTH is only offered inside TLS, so there is no
    /// submission without one.
    #[error("submission needs TLS: {0}")]
    Tls(String),
}

/// What every session shares.
pub(crate) struct Shared {
    pub config: SubmissionConfig,
    pub log: EventLog,
    pub directory: Directory,
    pub tls: TlsAcceptor,
    /// Failed AUTH per client IP.
    pub ip_guard: FailureGuard<IpAddr>,
    /// Failed AUTH per user name (as typed, lower-cased).
    pub user_guard: FailureGuard<String>,
    pub rates: SendingRates,
    /// The longest the log may take to confirm a message.
    pub durable_timeout: Duration,
}

/// The submission role. Cheap to clone.
#[derive(Clone)]
pub struct Submission {
    shared: Arc<Shared>,
    open: Arc<AtomicUsize>,
    /// Sessions open now per client key (address, or IPv6 /64).
    per_ip: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    listening: Arc<AtomicBool>,
}

/// Both listeners, bound.
pub struct Listeners {
    starttls: TcpListener,
    implicit_tls: Option<TcpListener>,
}

impl Submission {
    /// Builds the role; loads the certificate, which it cannot do without.
    pub fn new(
        config: SubmissionConfig,
        log: EventLog,
        directory: Directory,
        publish_timeout: Duration,
    ) -> Result<Self, SubmissionError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                pampa_ingest::conn::load_tls(cert, key).map_err(SubmissionError::Tls)?
            }
            _ => {
                return Err(SubmissionError::Tls(
                    "set submission.tls_cert and submission.tls_key".into(),
                ))
            }
        };
        let shared = Shared {
            ip_guard: FailureGuard::new(
                config.auth_failures_per_ip,
                config.auth_failure_window,
                config.auth_lockout,
            ),
            user_guard: FailureGuard::new(
                config.auth_failures_per_user,
                config.auth_failure_window,
                config.auth_lockout,
            ),
            rates: SendingRates::new(config.ip_messages_per_hour),
            config,
            log,
            directory,
            tls,
            durable_timeout: publish_timeout.saturating_mul(2),
        };
        Ok(Submission {
            shared: Arc::new(shared),
            open: Arc::new(AtomicUsize::new(0)),
            per_ip: Arc::new(std::sync::Mutex::new(std::collections::HashMap::new())),
            listening: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Binds the configured addresses.
    pub async fn bind(&self) -> Result<Listeners, SubmissionError> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| SubmissionError::Bind { addr, source })
        };
        let config = &self.shared.config;
        let starttls = bind(config.listen.clone()).await?;
        let implicit_tls = if config.tls_listen.is_empty() {
            None
        } else {
            Some(bind(config.tls_listen.clone()).await?)
        };
        Ok(Listeners {
            starttls,
            implicit_tls,
        })
    }

    /// Whether the listeners are accepting (for `/readyz`).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Accepts sessions on both listeners until `shutdown` turns true.
    pub async fn serve(self, listeners: Listeners, shutdown: watch::Receiver<bool>) {
        self.listening.store(true, Ordering::Relaxed);
        for result in ["accepted", "rejected", "tempfail"] {
            ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => result).increment(0);
        }
        for result in ["ok", "failed", "locked_out", "no_tls"] {
            ::metrics::counter!(metrics::AUTH_TOTAL, "result" => result).increment(0);
        }
        for scope in ["ip", "user"] {
            ::metrics::counter!(metrics::LOCKOUTS_TOTAL, "scope" => scope).increment(0);
        }
        for place in ["envelope", "header"] {
            ::metrics::counter!(metrics::FORGED_TOTAL, "where" => place).increment(0);
        }
        for limit in [
            "messages_per_hour",
            "recipients_per_hour",
            "ip_messages_per_hour",
        ] {
            ::metrics::counter!(metrics::LIMITED_TOTAL, "limit" => limit).increment(0);
        }
        ::metrics::gauge!(metrics::ACTIVE_SESSIONS).increment(0.0);
        let implicit = listeners.implicit_tls.map(|listener| {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { this.accept_loop(listener, true, shutdown).await })
        });
        self.clone()
            .accept_loop(listeners.starttls, false, shutdown)
            .await;
        if let Some(task) = implicit {
            let _ = task.await;
        }
        self.listening.store(false, Ordering::Relaxed);
    }

    async fn accept_loop(
        self,
        listener: TcpListener,
        implicit_tls: bool,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Accepting a submission connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if self.open.fetch_add(1, Ordering::AcqRel) >= self.shared.config.max_connections {
                self.open.fetch_sub(1, Ordering::AcqRel);
                ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => "refused_busy")
                    .increment(1);
                tokio::spawn(refuse(
                    stream,
                    "421 4.3.2 Too many connections, try again later\r\n",
                ));
                continue;
            }
            let key = pampa_ingest::guard::client_key(peer.ip());
            let mine = {
                let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let mine = per_ip.entry(key).or_insert(0);
                *mine += 1;
                *mine
            };
            if mine > self.shared.config.max_connections_per_ip {
                self.release(key);
                ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => "refused_per_ip")
                    .increment(1);
                tokio::spawn(refuse(
                    stream,
                    "421 4.7.0 Too many connections from your address, try again later\r\n",
                ));
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                ::metrics::gauge!(metrics::ACTIVE_SESSIONS).increment(1.0);
                let result = this.session(stream, peer, implicit_tls).await;
                ::metrics::gauge!(metrics::ACTIVE_SESSIONS).decrement(1.0);
                ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => result).increment(1);
                this.release(key);
            });
        }
    }

    /// Gives back one session's place in the counts.
    fn release(&self, key: IpAddr) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&key);
            }
        }
    }

    async fn session(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        implicit_tls: bool,
    ) -> &'static str {
        let io: Box<dyn Io> = if implicit_tls {
            let handshake = self.shared.tls.accept(stream);
            match tokio::time::timeout(self.shared.config.idle_timeout, handshake).await {
                Ok(Ok(tls)) => Box::new(tls),
                _ => return "tls_error",
            }
        } else {
            Box::new(stream)
        };
        Session::new(self.shared.clone(), io, peer, implicit_tls)
            .run()
            .await
    }
}

/// Says why and closes, without reading anything from the client.
async fn refuse(mut stream: tokio::net::TcpStream, reply: &'static str) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
