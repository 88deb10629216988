//! `GET /metrics`, `/healthz` and `/readyz`.
//!
//! Written by hand on tokio: three fixed GET paths do not justify an HTTP stack, and
//! metrics-exporter-prometheus's own listener cannot serve the health endpoints.

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

/// Serves the endpoints until shutdown.
pub async fn serve(
    listener: TcpListener,
    prometheus: PrometheusHandle,
    ready: ReadinessCheck,
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
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, prometheus, ready))
                    .await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    prometheus: PrometheusHandle,
    ready: ReadinessCheck,
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
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match ready().await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
