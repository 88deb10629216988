//! The listener, TLS set-up, and the state every session shares.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use pampa_bus::EventLog;
use pampa_directory::Directory;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::{rustls, TlsAcceptor};

use crate::{guard::DictionaryGuard, metrics, session, SmtpConfig};

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
}

fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, IngestError> {
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        IngestError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let cert_pem = std::fs::read(cert).map_err(|e| tls_err("cannot read", cert, &e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("bad certificate in", cert, &e))?;
    if certs.is_empty() {
        return Err(IngestError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key_pem = std::fs::read(key).map_err(|e| tls_err("cannot read", key, &e))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls_err("bad key in", key, &e))?
        .ok_or_else(|| IngestError::Tls(format!("no private key in {}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| IngestError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| IngestError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
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
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
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
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    tokio::spawn(run_session(shared, stream, peer));
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

async fn run_session(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    ::metrics::gauge!(metrics::ACTIVE_SESSIONS).increment(1.0);
    let result = session::Session::new(shared, Box::new(stream), peer)
        .run()
        .await;
    ::metrics::gauge!(metrics::ACTIVE_SESSIONS).decrement(1.0);
    ::metrics::counter!(metrics::SESSIONS_TOTAL, "result" => result).increment(1);
}
