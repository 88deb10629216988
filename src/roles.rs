//! Wiring roles together: `pampa up` runs them all, `pampa run ROLE` runs one.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pampa_bus::{EventLog, Runner};
use pampa_deliver::Deliver;
use pampa_directory::Directory;
use pampa_ingest::Ingest;
use pampa_schemas::MailReceived;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{config::Config, http, Role};

/// The subject deliver reads until the filtering stages sit in between.
const DELIVER_INPUT: &str = <MailReceived as pampa_schemas::Event>::EVENT_TYPE;

/// What every role needs: the log, the directory and the metrics recorder.
struct Backends {
    log: EventLog,
    directory: Directory,
    prometheus: PrometheusHandle,
}

async fn open_backends(config: &Config) -> Result<Backends> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let log = EventLog::open(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let directory = Directory::connect(&config.db_url())
        .await
        .context("cannot open the directory database")?;
    Ok(Backends {
        log,
        directory,
        prometheus,
    })
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::info!("Shutting down.");
        let _ = tx.send(true);
    });
    rx
}

fn readiness(backends: &Backends, ingest: Option<Ingest>) -> http::ReadinessCheck {
    let log = backends.log.clone();
    let directory = backends.directory.clone();
    Arc::new(move || {
        let (log, directory, ingest) = (log.clone(), directory.clone(), ingest.clone());
        Box::pin(async move {
            if let Some(ingest) = &ingest {
                if !ingest.is_listening() {
                    return Err("SMTP is not listening".to_owned());
                }
            }
            if !log.is_ready().await {
                return Err("the event log is unreachable".to_owned());
            }
            match tokio::time::timeout(Duration::from_secs(2), directory.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("the directory is unreachable: {e}")),
                Err(_) => Err("the directory does not answer".to_owned()),
            }
        })
    })
}

async fn start_metrics(
    config: &Config,
    backends: &Backends,
    ingest: Option<Ingest>,
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
) -> Result<()> {
    let listener = TcpListener::bind(&config.metrics.listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.listen))?;
    tasks.spawn(http::serve(
        listener,
        backends.prometheus.clone(),
        readiness(backends, ingest),
        shutdown.clone(),
    ));
    Ok(())
}

async fn start_ingest(
    config: &Config,
    backends: &Backends,
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Ingest> {
    let ingest = Ingest::new(
        config.smtp.clone(),
        backends.log.clone(),
        backends.directory.clone(),
        config.bus.publish_timeout,
    )?;
    let listener = ingest.bind().await?;
    tasks.spawn(ingest.clone().serve(listener, shutdown.clone()));
    Ok(ingest)
}

fn start_deliver(
    config: &Config,
    backends: &Backends,
    tasks: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
) {
    let deliver = Deliver::new(
        backends.log.clone(),
        backends.directory.clone(),
        config.data_dir.clone(),
        &config.smtp.hostname,
    );
    let runner = Runner::new(backends.log.clone(), deliver, DELIVER_INPUT, &config.bus)
        .concurrency(config.deliver.concurrency);
    tasks.spawn(runner.run(shutdown.clone()));
}

async fn wait(mut tasks: JoinSet<()>, mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
    // Give sessions and stages a moment to settle their current work.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// `pampa up`: every role in one process.
pub async fn up(config: Config) -> Result<()> {
    let backends = open_backends(&config).await?;
    let shutdown = shutdown_signal();
    let mut tasks = JoinSet::new();
    let ingest = start_ingest(&config, &backends, &mut tasks, &shutdown).await?;
    start_deliver(&config, &backends, &mut tasks, &shutdown);
    start_metrics(
        &config,
        &backends,
        Some(ingest.clone()),
        &mut tasks,
        &shutdown,
    )
    .await?;

    let log_where = match &backends.log {
        EventLog::Embedded(_) => format!("embedded, in {}", config.data_dir.join("log").display()),
        EventLog::JetStream(_) => format!("NATS JetStream at {}", config.bus.url),
    };
    println!("pampa is up.");
    println!(
        "  SMTP       listening on {} ({})",
        config.smtp.listen,
        if ingest.offers_tls() {
            "STARTTLS offered"
        } else {
            "no TLS certificate configured"
        }
    );
    println!(
        "  metrics    http://{}/metrics  (also /healthz and /readyz)",
        config.metrics.listen
    );
    println!("  event log  {log_where}");
    println!("  directory  {}", redact(&config.db_url()));
    println!(
        "  mail goes to {}/{{domain}}/{{user}}/ (Maildir)",
        config.data_dir.join("mail").display()
    );
    if backends.directory.list_domains().await?.is_empty() {
        println!("No local domain yet. Add one and a user, then send mail:");
        println!("  pampa domain add example.org");
        println!("  pampa user add alice@example.org --password secret");
    }
    wait(tasks, shutdown).await;
    Ok(())
}

/// `pampa run ROLE`: one role in this process.
pub async fn run(config: Config, role: Role) -> Result<()> {
    let backends = open_backends(&config).await?;
    if matches!(backends.log, EventLog::Embedded(_)) {
        tracing::warn!(
            "The embedded log serves one process; several `pampa run` processes need NATS."
        );
    }
    let shutdown = shutdown_signal();
    let mut tasks = JoinSet::new();
    let ingest = match role {
        Role::Ingest => Some(start_ingest(&config, &backends, &mut tasks, &shutdown).await?),
        Role::Deliver => {
            start_deliver(&config, &backends, &mut tasks, &shutdown);
            None
        }
    };
    start_metrics(&config, &backends, ingest, &mut tasks, &shutdown).await?;
    tracing::info!(role = ?role, "Role is running.");
    wait(tasks, shutdown).await;
    Ok(())
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact("mysql://pampa:s3cret@db:3306/pampa"),
            "mysql://pampa:***@db:3306/pampa"
        );
        assert_eq!(
            super::redact("sqlite://./pampa-data/pampa.db"),
            "sqlite://./pampa-data/pampa.db"
        );
    }
}
