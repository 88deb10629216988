//! The listener, TLS set-up, and the state every session shares.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use pampa_bus::EventLog;
use pampa_directory::Directory;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{guard::DictionaryGuard, metrics, rate::ConnectionRate, session, SmtpConfig};

/// Why the MX could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The listen address is taken or not ours.
    #[error("cannot listen for SMTP on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate or key cannot be used.
    #[error("cannot load TLS certificate/key: {0}")]
    Tls(String),
}

/// What every session of one MX shares.
pub(crate) struct Shared {
    pub config: SmtpConfig,
    pub log: EventLog,
    pub directory: Directory,
    pub tls: Option<TlsAcceptor>,
    pub guard: DictionaryGuard,
    /// The longest the blob store and the log together may take to confirm a message.
    pub durable_timeout: Duration,
}

/// The SMTP MX. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    shared: Arc<Shared>,
    listening: Arc<AtomicBool>,
    /// The sessions open now, for the connection caps.
    open: Arc<Mutex<OpenSessions>>,
    /// New connections per client address, for the rate limit.
    rate: Arc<ConnectionRate>,
}

impl Ingest {
    /// Builds the MX; loads the TLS certificate if one is configured.
    pub fn new(
        config: SmtpConfig,
        log: EventLog,
        directory: Directory,
        publish_timeout: Duration,
    ) -> Result<Self, IngestError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::conn::load_tls(cert, key).map_err(IngestError::Tls)?)
            }
            (None, None) => None,
            _ => {
                return Err(IngestError::Tls(
                    "set both smtp.tls_cert and smtp.tls_key, or neither".into(),
                ))
            }
        };
        let guard = DictionaryGuard::new(
            config.unknown_recipient_limit,
            config.unknown_recipient_window,
            config.unknown_recipient_block,
        );
        let config_rate = config.max_connection_rate_per_ip;
        Ok(Ingest {
            shared: Arc::new(Shared {
                config,
                log,
                directory,
                tls,
                guard,
                // A blob put and an event publish, each bounded by the publish timeout.
                durable_timeout: publish_timeout.saturating_mul(2),
            }),
            listening: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(OpenSessions::default())),
            rate: Arc::new(ConnectionRate::new(config_rate)),
        })
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, IngestError> {
        let addr = self.shared.config.listen.clone();
        TcpListener::bind(&addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })
    }

    /// Whether the listener is accepting (for `/readyz`).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Whether STARTTLS is offered.
    pub fn offers_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Accepts sessions until `shutdown` turns true.
    pub async fn serve(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        self.listening.store(true, Ordering::Relaxed);
        // The mail-flow series exist from the start, at zero (a panel with no data does
        // not say "no mail").
        for result in ["accepted", "rejected", "tempfail"] {
            ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => result).increment(0);
        }
        ::metrics::gauge!(metrics::ACTIVE_SESSIONS).increment(0.0);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    let slot = if self.rate.check(peer.ip()) {
                        SessionSlot::take(&self.open, &shared.config, peer.ip())
                    } else {
                        Err(Refusal {
                            reply: "421 4.7.0 Too many connections from your address in a short time, slow down\r\n",
                            label: "refused_rate",
                        })
                    };
                    match slot {
                        Ok(slot) => {
                            tokio::spawn(async move {
                                run_session(shared, stream, peer).await;
                                drop(slot);
                            });
                        }
                        Err(refusal) => {
                            ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => refusal.label)
                                .increment(1);
                            tokio::spawn(refuse(stream, refusal.reply));
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "Accepting an SMTP connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.listening.store(false, Ordering::Relaxed);
    }
}

/// Sessions open now, in all and per client address.
#[derive(Default)]
struct OpenSessions {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away: the reply and the metric label.
struct Refusal {
    reply: &'static str,
    label: &'static str,
}

/// One open session's place in the counts, given back when the session ends.
struct SessionSlot {
    open: Arc<Mutex<OpenSessions>>,
    ip: IpAddr,
}

impl SessionSlot {
    fn take(
        open: &Arc<Mutex<OpenSessions>>,
        config: &SmtpConfig,
        ip: IpAddr,
    ) -> Result<SessionSlot, Refusal> {
        let mut counts = open.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= config.max_connections {
            return Err(Refusal {
                reply: "421 4.3.2 Too many connections, try again later\r\n",
                label: "refused_busy",
            });
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= config.max_connections_per_ip {
            return Err(Refusal {
                reply: "421 4.7.0 Too many connections from your address, try again later\r\n",
                label: "refused_per_ip",
            });
        }
        *mine += 1;
        counts.total += 1;
        Ok(SessionSlot {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
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

async fn run_session(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    ::metrics::gauge!(metrics::ACTIVE_SESSIONS).increment(1.0);
    let result = session::Session::new(shared, Box::new(stream), peer)
        .run()
        .await;
    ::metrics::gauge!(metrics::ACTIVE_SESSIONS).decrement(1.0);
    ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => result).increment(1);
}
