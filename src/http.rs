//! `GET /metrics`, `/healthz` and `/readyz`, and `POST /-/reload` (as Prometheus names
//! it) for the roles that reload files (the DNS zones): what `pampa dns reload` calls.
//!
//! Written by hand on tokio: four fixed paths do not justify an HTTP stack, and
//! metrics-exporter-prometheus's own listener cannot serve the health endpoints. The
//! listener is loopback by default; reload only rereads the configured files.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Answers whether the process can do its work; `Err` names what is missing.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Reloads what the process serves from files; `Ok` says what loaded, `Err` what did
/// not (the old data keeps serving).
pub type ReloadAction =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Serves the endpoints until shutdown.
pub async fn serve(
    listener: TcpListener,
    prometheus: PrometheusHandle,
    ready: ReadinessCheck,
    reload: Option<ReloadAction>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let prometheus = prometheus.clone();
        let ready = ready.clone();
        let reload = reload.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                answer(stream, prometheus, ready, reload),
            )
            .await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    prometheus: PrometheusHandle,
    ready: ReadinessCheck,
    reload: Option<ReloadAction>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let mut parts = first_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", prometheus.render()),
        ("GET", "/healthz" | "/livez") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match ready().await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        ("POST", "/-/reload") => match &reload {
            Some(reload) => match reload().await {
                Ok(report) => ("200 OK", "text/plain", report),
                Err(why) => (
                    "500 Internal Server Error",
                    "text/plain",
                    format!("{why}\n"),
                ),
            },
            None => (
                "404 Not Found",
                "text/plain",
                "nothing to reload in this process\n".to_owned(),
            ),
        },
        ("GET", _) | ("POST", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and POST\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
