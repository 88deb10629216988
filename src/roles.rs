//! Wiring roles together: `pampa up` runs them all, `pampa run ROLE` runs one.

use std::{sync::Arc, time::Duration};

use anyhow::{anyhow, Context, Result};
use clap::ValueEnum;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pampa_bus::{EventLog, Handler, Runner};
use pampa_deliver::Deliver;
use pampa_directory::Directory;
use pampa_dns::{Dns, DnsHandle, ReloadOutcome, ReloadReport};
use pampa_ingest::Ingest;
use pampa_radius::{Radius, RadiusHandle};
use pampa_relay::Relay;
use pampa_schemas::RECOVERED_EVENT_TYPE;
use pampa_stages::{
    antivirus::Antivirus, auth::Auth, rbl::Rbl, score::Score, whitelist::Whitelist, OutboundConfig,
    Stage, StageHandler, StageName,
};
use pampa_submission::Submission;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{config::Config, http, radius_directory::DirectoryForRadius};

/// The roles this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The SMTP MX.
    Ingest,
    /// DNSBL and URI blocklists.
    Rbl,
    /// Allow and block lists, and the address book.
    Whitelist,
    /// clamd.
    Antivirus,
    /// SPF, DKIM and DMARC.
    Auth,
    /// Score and per-recipient decisions.
    Score,
    /// Writes each recipient's copy to its mailbox store.
    Deliver,
    /// RADIUS authentication and accounting.
    Radius,
    /// Authoritative zones, DNSBL mirror zones and recursion.
    Dns,
    /// Authenticated SMTP for users (587 with STARTTLS, 465 with TLS).
    Submission,
    /// clamd on submitted mail.
    OutboundAntivirus,
    /// Score on submitted mail: what scores as spam is held.
    OutboundScore,
    /// Delivers outbound mail to the internet; holds what the checks judged spam.
    Relay,
}

impl Role {
    fn stage(self) -> Option<StageName> {
        match self {
            Role::Rbl => Some(StageName::Rbl),
            Role::Whitelist => Some(StageName::Whitelist),
            Role::Antivirus => Some(StageName::Antivirus),
            Role::Auth => Some(StageName::Auth),
            Role::Score => Some(StageName::Score),
            _ => None,
        }
    }

    fn outbound_stage(self) -> Option<StageName> {
        match self {
            Role::OutboundAntivirus => Some(StageName::Antivirus),
            Role::OutboundScore => Some(StageName::Score),
            _ => None,
        }
    }
}

/// What every role needs: the log, the directory and the metrics recorder.
struct Backends {
    log: EventLog,
    directory: Directory,
    prometheus: PrometheusHandle,
}

/// The tasks of this process, the signal that stops them, and the extra checks
/// `/readyz` runs for the stages started here (clamd for `antivirus`).
struct Tasks {
    set: JoinSet<()>,
    shutdown: watch::Receiver<bool>,
    probes: Vec<http::ReadinessCheck>,
    /// What `POST /-/reload` and SIGHUP reload (the DNS zones), if a role here has files.
    reload: Option<http::ReloadAction>,
    /// SIGHUPs, from the moment the process starts its roles.
    hangups: Option<tokio::signal::unix::Signal>,
}

impl Tasks {
    fn new() -> Self {
        Tasks {
            set: JoinSet::new(),
            shutdown: shutdown_signal(),
            probes: Vec::new(),
            reload: None,
            // Listening from the start replaces SIGHUP's default action (ending the
            // process) while the roles are still starting; `handle_sighup` reads it.
            hangups: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }
}

async fn open_backends(config: &Config) -> Result<Backends> {
    // Real histograms (not summaries), so durations can be aggregated across processes.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_bytes".to_owned()),
                &[1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6],
            )
        })
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    // Histogram samples wait in per-series buckets until they are folded in, which
    // `install_recorder` leaves to the caller: without it they pile up between scrapes,
    // and with nobody scraping, memory grew with every request (seen under sustained
    // SMTP load, tests/e2e/test_load.py).
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
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
        crate::service_manager::stopping();
        let _ = tx.send(true);
    });
    rx
}

/// The radius role as this process runs it.
type RadiusRole = RadiusHandle<DirectoryForRadius>;

fn readiness(
    backends: &Backends,
    ingest: Option<Ingest>,
    radius: Option<RadiusRole>,
    probes: Vec<http::ReadinessCheck>,
) -> http::ReadinessCheck {
    let log = backends.log.clone();
    let directory = backends.directory.clone();
    let probes = Arc::new(probes);
    Arc::new(move || {
        let (log, directory, ingest, radius, probes) = (
            log.clone(),
            directory.clone(),
            ingest.clone(),
            radius.clone(),
            probes.clone(),
        );
        Box::pin(async move {
            for probe in probes.iter() {
                probe().await?;
            }
            if let Some(ingest) = &ingest {
                if !ingest.is_listening() {
                    return Err("SMTP is not listening".to_owned());
                }
            }
            if let Some(radius) = &radius {
                if !radius.is_listening() {
                    return Err("RADIUS is not listening".to_owned());
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
    radius: Option<RadiusRole>,
    tasks: &mut Tasks,
) -> Result<()> {
    let listener = TcpListener::bind(&config.metrics.listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.listen))?;
    tasks.set.spawn(http::serve(
        listener,
        backends.prometheus.clone(),
        readiness(backends, ingest, radius, std::mem::take(&mut tasks.probes)),
        tasks.reload.clone(),
        tasks.shutdown.clone(),
    ));
    Ok(())
}

async fn start_radius(
    config: &Config,
    backends: &Backends,
    tasks: &mut Tasks,
) -> Result<RadiusRole> {
    let radius = Radius::new(
        config.radius.clone(),
        DirectoryForRadius::new(backends.directory.clone()),
        backends.log.clone(),
        config.bus.publish_timeout,
    );
    let sockets = radius.bind().await.with_context(|| {
        format!(
            "cannot listen for RADIUS on {} and {}",
            config.radius.auth_listen, config.radius.acct_listen
        )
    })?;
    let handle = radius.handle();
    tasks
        .set
        .spawn(radius.serve(sockets, tasks.shutdown.clone()));
    Ok(handle)
}

/// Starts the DNS role; `POST /-/reload` and SIGHUP reload its zones.
async fn start_dns(config: &Config, backends: &Backends, tasks: &mut Tasks) -> Result<DnsHandle> {
    let dns_config = config.dns.clone();
    let log = backends.log.clone();
    let timeout = config.bus.publish_timeout;
    // Loading big DNSBL datasets is CPU work: off the async workers.
    let dns = tokio::task::spawn_blocking(move || Dns::new(dns_config, log, timeout))
        .await
        .context("the DNS loader stopped")?
        .context("cannot start the DNS role")?;
    let sockets = dns
        .bind()
        .await
        .with_context(|| format!("cannot listen for DNS on {}", config.dns.listen))?;
    let handle = dns.handle();
    tasks.set.spawn(dns.serve(sockets, tasks.shutdown.clone()));

    let reloader = handle.clone();
    let reload: http::ReloadAction = Arc::new(move || {
        let handle = reloader.clone();
        Box::pin(async move {
            let report = handle.reload_report().await;
            let text = describe_reload(&report);
            if report.is_ok() {
                Ok(text)
            } else {
                Err(text)
            }
        })
    });
    tasks.reload = Some(reload);
    tasks.probes.push({
        let handle = handle.clone();
        Arc::new(move || {
            let listening = handle.is_listening();
            Box::pin(async move {
                if listening {
                    Ok(())
                } else {
                    Err("DNS is not listening".to_owned())
                }
            })
        })
    });
    Ok(handle)
}

/// One line per zone: what a reload did.
fn describe_reload(report: &ReloadReport) -> String {
    let mut text = String::new();
    for (kind, zone) in report
        .zones
        .iter()
        .map(|z| ("zone", z))
        .chain(report.dnsbl.iter().map(|z| ("dnsbl", z)))
    {
        let what = match &zone.outcome {
            ReloadOutcome::Loaded { serial, records } if kind == "zone" => {
                format!("loaded, serial {serial}, {records} records")
            }
            ReloadOutcome::Loaded { .. } => "loaded".to_owned(),
            ReloadOutcome::Unchanged => "unchanged".to_owned(),
            ReloadOutcome::Failed(why) => format!("FAILED, the old version keeps serving: {why}"),
        };
        text.push_str(&format!(
            "{kind} {} ({}): {what}\n",
            zone.name,
            zone.file.display()
        ));
    }
    if text.is_empty() {
        text.push_str("no zones configured\n");
    }
    text
}

/// Listens for SIGHUP in every process, so that it never ends one: its default action
/// is to terminate, and a role killed by SIGHUP exits "cleanly" for systemd, which then
/// does not restart it. Where the dns role runs it reloads the zones, as name servers
/// do; elsewhere it is logged and ignored.
fn handle_sighup(tasks: &mut Tasks) {
    let Some(mut hangups) = tasks.hangups.take() else {
        tracing::warn!("Cannot listen for SIGHUP; `pampa dns reload` still works.");
        return;
    };
    let reload = tasks.reload.clone();
    let mut shutdown = tasks.shutdown.clone();
    tasks.set.spawn(async move {
        loop {
            tokio::select! {
                _ = hangups.recv() => match &reload {
                    Some(reload) => match reload().await {
                        Ok(report) => tracing::info!(report = %report.trim_end(), "Reloaded on SIGHUP."),
                        Err(report) => tracing::error!(report = %report.trim_end(), "A reload on SIGHUP failed; the old zones keep serving."),
                    },
                    None => tracing::info!("SIGHUP ignored: no role of this process has files to reload."),
                },
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn start_ingest(config: &Config, backends: &Backends, tasks: &mut Tasks) -> Result<Ingest> {
    let ingest = Ingest::new(
        config.smtp.clone(),
        backends.log.clone(),
        backends.directory.clone(),
        config.bus.publish_timeout,
    )?;
    let listener = ingest.bind().await?;
    tasks
        .set
        .spawn(ingest.clone().serve(listener, tasks.shutdown.clone()));
    Ok(ingest)
}

fn spawn_runner<H: Handler>(
    config: &Config,
    backends: &Backends,
    handler: H,
    input: &str,
    concurrency: usize,
    tasks: &mut Tasks,
) {
    let runner =
        Runner::new(backends.log.clone(), handler, input, &config.bus).concurrency(concurrency);
    tasks.set.spawn(runner.run(tasks.shutdown.clone()));
}

/// Which mail a stage checks: the MX's (`[pipeline]`) or submitted mail
/// (`[outbound]`, under its own consumers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Inbound,
    Outbound,
}

fn spawn_stage<S: Stage>(
    config: &Config,
    backends: &Backends,
    name: StageName,
    stage: S,
    flow: Flow,
    tasks: &mut Tasks,
) -> Result<()> {
    let (input, output, consumer, section) = match flow {
        Flow::Inbound => (
            config.pipeline.input_of(name).map(str::to_owned),
            name.output().to_owned(),
            name.as_str().to_owned(),
            "pipeline",
        ),
        Flow::Outbound => (
            config.outbound.input_of(name),
            config.outbound.output_of(name),
            OutboundConfig::consumer_name(name),
            "outbound",
        ),
    };
    let input = input.ok_or_else(|| {
        anyhow!(
            "stage {} is not in {section}.stages, so it has nothing to read",
            name.as_str()
        )
    })?;
    let handler = StageHandler::new(stage, backends.log.clone(), &output).named(&consumer);
    spawn_runner(
        config,
        backends,
        handler,
        &input,
        config.stages.concurrency,
        tasks,
    );
    Ok(())
}

async fn start_submission(config: &Config, backends: &Backends, tasks: &mut Tasks) -> Result<()> {
    let submission = Submission::new(
        config.submission.clone(),
        backends.log.clone(),
        backends.directory.clone(),
        config.bus.publish_timeout,
    )?;
    let listeners = submission.bind().await?;
    let probe = submission.clone();
    tasks.probes.push(Arc::new(move || {
        let listening = probe.is_listening();
        Box::pin(async move {
            if listening {
                Ok(())
            } else {
                Err("submission is not listening".to_owned())
            }
        })
    }));
    tasks
        .set
        .spawn(submission.serve(listeners, tasks.shutdown.clone()));
    Ok(())
}

fn start_relay(config: &Config, backends: &Backends, tasks: &mut Tasks) -> Result<()> {
    let relay = Relay::new(
        config.relay.clone(),
        backends.log.clone(),
        backends.directory.clone(),
    )?;
    spawn_runner(
        config,
        backends,
        relay.handler(),
        pampa_schemas::OUTBOUND_EVENT_TYPE,
        config.stages.concurrency,
        tasks,
    );
    tasks.set.spawn(relay.run_queue(tasks.shutdown.clone()));
    // Finished queue rows outlive their messages only by the log's retention.
    spawn_retention_purge(
        config,
        backends,
        tasks,
        "the relay queue's finished rows",
        |d, before| Box::pin(async move { d.purge_relay_queue(before).await }),
    );
    Ok(())
}

async fn start_stage(
    config: &Config,
    backends: &Backends,
    name: StageName,
    flow: Flow,
    tasks: &mut Tasks,
) -> Result<()> {
    if flow == Flow::Outbound && !matches!(name, StageName::Score | StageName::Antivirus) {
        return Err(anyhow!(
            "{} is not an outbound check; outbound.stages takes antivirus and score",
            name.as_str()
        ));
    }
    match name {
        StageName::Score => {
            let (stage, report) =
                Score::new(&config.stages.score).context("cannot start the score stage")?;
            log_rule_report(&report);
            spawn_stage(config, backends, name, stage, flow, tasks)
        }
        StageName::Whitelist => {
            let stage = Whitelist::new(config.stages.whitelist.clone(), backends.directory.clone());
            spawn_stage(config, backends, name, stage, flow, tasks)
        }
        StageName::Rbl => {
            let stage =
                Rbl::new(config.stages.rbl.clone()).context("cannot start the rbl stage")?;
            spawn_stage(config, backends, name, stage, flow, tasks)
        }
        StageName::Auth => {
            let stage =
                Auth::new(config.stages.auth.clone()).context("cannot start the auth stage")?;
            spawn_stage(config, backends, name, stage, flow, tasks)
        }
        StageName::Antivirus => {
            let stage = Antivirus::new(config.stages.antivirus.clone())
                .context("cannot start the antivirus stage")?;
            // Mail waits (nothing is lost) while clamd is down; /readyz says why.
            let probe = stage.clone();
            tasks.probes.push(Arc::new(move || {
                let probe = probe.clone();
                Box::pin(async move { probe.ping().await.map_err(|e| format!("clamd: {e}")) })
            }));
            spawn_stage(config, backends, name, stage, flow, tasks)
        }
    }
}

/// Says what the rule files held that pampa does not run, so no rule is dropped silently.
fn log_rule_report(report: &pampa_stages::rules::LoadReport) {
    tracing::info!(
        rules = report.total(),
        files = report.files.len(),
        "Rules loaded."
    );
    for item in &report.unsupported {
        tracing::warn!(
            rule = item.rule.as_deref().unwrap_or("-"),
            file = %item.file.display(),
            line = item.line,
            why = %item.why,
            "Rule not supported; it scores nothing."
        );
    }
}

fn start_deliver(config: &Config, backends: &Backends, tasks: &mut Tasks) {
    let deliver = || {
        Deliver::new(
            backends.log.clone(),
            backends.directory.clone(),
            config.data_dir.clone(),
            &config.smtp.hostname,
            config.deliver.clone(),
        )
    };
    let live = Runner::new(
        backends.log.clone(),
        deliver(),
        config.pipeline.deliver_input(),
        &config.bus,
    )
    .max_deliver(config.deliver.max_deliver)
    .concurrency(config.deliver.concurrency);
    tasks.set.spawn(live.run(tasks.shutdown.clone()));
    // Recoveries are rare and small: one at a time is plenty.
    let recover = Runner::new(
        backends.log.clone(),
        deliver().recovering(),
        RECOVERED_EVENT_TYPE,
        &config.bus,
    )
    .max_deliver(config.deliver.max_deliver)
    .concurrency(1);
    tasks.set.spawn(recover.run(tasks.shutdown.clone()));
    // Delivery marks outlive their messages only by the log's retention: a message the
    // log no longer holds is never tried again.
    spawn_retention_purge(
        config,
        backends,
        tasks,
        "old delivery marks",
        |d, before| Box::pin(async move { d.purge_delivery_marks(before).await }),
    );
}

/// The future of one purge: rows removed, or why not.
type PurgeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u64, pampa_directory::DirectoryError>> + Send>,
>;

/// Every hour, `purge(directory, before)` with `before` the log's retention ago: SQL
/// rows about messages outlive them only as long as the log keeps the messages.
fn spawn_retention_purge(
    config: &Config,
    backends: &Backends,
    tasks: &mut Tasks,
    what: &'static str,
    purge: impl Fn(Directory, i64) -> PurgeFuture + Send + 'static,
) {
    let directory = backends.directory.clone();
    let retention = config.bus.max_age;
    let mut shutdown = tasks.shutdown.clone();
    tasks.set.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let before = chrono::Utc::now().timestamp() - retention.as_secs() as i64;
            if let Err(error) = purge(directory.clone(), before).await {
                tracing::warn!(%error, what, "Cannot purge rows past the log's retention.");
            }
        }
    });
}

async fn wait(mut tasks: Tasks) {
    let _ = tasks.shutdown.wait_for(|stop| *stop).await;
    // Give sessions and stages a moment to settle their current work.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.set.join_next().await.is_some() {}
    })
    .await;
}

/// `pampa up`: every role in one process.
pub async fn up(config: Config) -> Result<()> {
    let mut tasks = Tasks::new();
    let backends = open_backends(&config).await?;
    for stage in &config.pipeline.stages {
        start_stage(&config, &backends, *stage, Flow::Inbound, &mut tasks).await?;
    }
    start_deliver(&config, &backends, &mut tasks);
    let ingest = start_ingest(&config, &backends, &mut tasks).await?;
    let radius = start_radius(&config, &backends, &mut tasks).await?;
    start_dns(&config, &backends, &mut tasks).await?;
    // Submission needs a certificate (AUTH only inside TLS); without one, `pampa up`
    // runs inbound mail only.
    let outbound = config.submission.tls_cert.is_some();
    if outbound {
        start_submission(&config, &backends, &mut tasks).await?;
        for stage in &config.outbound.stages {
            start_stage(&config, &backends, *stage, Flow::Outbound, &mut tasks).await?;
        }
        start_relay(&config, &backends, &mut tasks)?;
    }
    start_metrics(
        &config,
        &backends,
        Some(ingest.clone()),
        Some(radius),
        &mut tasks,
    )
    .await?;

    let log_where = match &backends.log {
        EventLog::Embedded(_) => format!("embedded, in {}", config.data_dir.join("log").display()),
        EventLog::JetStream(_) => format!("NATS JetStream at {}", config.bus.url),
    };
    let stages: Vec<&str> = config.pipeline.stages.iter().map(|s| s.as_str()).collect();
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
        "  stages     {}",
        if stages.is_empty() {
            "none".to_owned()
        } else {
            stages.join(" -> ")
        }
    );
    if outbound {
        let outbound_stages: Vec<&str> =
            config.outbound.stages.iter().map(|s| s.as_str()).collect();
        let implicit = if config.submission.tls_listen.is_empty() {
            String::new()
        } else {
            format!(" and {} (TLS)", config.submission.tls_listen)
        };
        println!(
            "  submission listening on {} (STARTTLS){implicit}; checks {} -> relay (lab use: MX and relay share this process)",
            config.submission.listen,
            outbound_stages.join(" -> ")
        );
    } else {
        println!("  submission off (set submission.tls_cert and tls_key to send mail out)");
    }
    println!(
        "  RADIUS     auth on {}, accounting on {} (udp)",
        config.radius.auth_listen, config.radius.acct_listen
    );
    println!(
        "  DNS        on {} (udp and tcp), {} zones, {} DNSBL zones, recursion for {}",
        config.dns.listen,
        config.dns.zones.len(),
        config.dns.dnsbl.len(),
        config.dns.recursion_allowed.join(", ")
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
    handle_sighup(&mut tasks);
    crate::service_manager::ready();
    wait(tasks).await;
    Ok(())
}

/// `pampa run ROLE`: one role in this process.
pub async fn run(config: Config, role: Role) -> Result<()> {
    let mut tasks = Tasks::new();
    let backends = open_backends(&config).await?;
    if matches!(backends.log, EventLog::Embedded(_)) {
        tracing::warn!(
            "The embedded log serves one process; several `pampa run` processes need NATS."
        );
    }
    let mut radius = None;
    let ingest = match role {
        Role::Ingest => Some(start_ingest(&config, &backends, &mut tasks).await?),
        Role::Deliver => {
            start_deliver(&config, &backends, &mut tasks);
            None
        }
        Role::Radius => {
            radius = Some(start_radius(&config, &backends, &mut tasks).await?);
            None
        }
        Role::Dns => {
            start_dns(&config, &backends, &mut tasks).await?;
            None
        }
        Role::Submission => {
            start_submission(&config, &backends, &mut tasks).await?;
            None
        }
        Role::Relay => {
            start_relay(&config, &backends, &mut tasks)?;
            None
        }
        Role::OutboundAntivirus | Role::OutboundScore => {
            let name = role
                .outbound_stage()
                .ok_or_else(|| anyhow!("{role:?} is not an outbound check"))?;
            start_stage(&config, &backends, name, Flow::Outbound, &mut tasks).await?;
            None
        }
        stage => {
            let name = stage
                .stage()
                .ok_or_else(|| anyhow!("{role:?} is not a stage"))?;
            start_stage(&config, &backends, name, Flow::Inbound, &mut tasks).await?;
            None
        }
    };
    start_metrics(&config, &backends, ingest, radius, &mut tasks).await?;
    tracing::info!(role = ?role, "Role is running.");
    handle_sighup(&mut tasks);
    crate::service_manager::ready();
    wait(tasks).await;
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
