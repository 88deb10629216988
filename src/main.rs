//! The `pampa` command: runs the roles and administers the directory and the log.

mod admin;
mod audit;
mod config;
mod dns_cli;
mod events;
mod feedback;
mod http;
mod lists;
mod migrate;
mod nas;
mod outbound;
mod plot;
mod radius_directory;
mod recover;
mod replay;
mod roles;
mod scoring;
mod service_manager;
mod sessions;
mod streams;
mod table;
mod trace;
mod train;

use std::path::PathBuf;

/// mimalloc instead of glibc's allocator: the request paths (RADIUS, DNS, the stages)
/// make many short-lived allocations across threads, and under load glibc's malloc
/// (its arena locks, `malloc_consolidate`) took a fifth of a cached PAP request's CPU
/// (perf, `ops/bench/radius.sh`). The `system-alloc` feature keeps glibc's, for heap
/// profilers that hook malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking file work (tokio::fs: blob and Maildir writes and their fsyncs).
/// tokio's default is 512, and under a sustained SMTP load every message waiting on an
/// fsync held one: `pampa up` grew to 260 threads at 40 sessions, and each thread kept
/// its own allocator heap, which was most of its memory growth (a heap profile showed
/// 45 MB live while RSS passed 600 MB). Concurrent fsyncs on one disk share journal
/// commits, so more threads than this buy no throughput.
const BLOCKING_THREADS: usize = 32;

use anyhow::Result;
use clap::{Parser, Subcommand};
use roles::Role;

/// pampa: the mail and access platform of an ISP, as an event-sourced pipeline.
#[derive(Parser)]
#[command(name = "pampa", version, about)]
struct Cli {
    /// Configuration file (default: ./pampa.toml if it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How log lines are written to stderr: `text` for people, `json` (one object per
    /// line, with the span's fields such as `session_id` and `message_id`) for a log
    /// collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in this process (ingest, the configured stages, deliver).
    Up,
    /// Run one role, so several processes can share the work over NATS.
    Run {
        /// The role to run.
        role: Role,
        /// Serve /metrics, /livez and /readyz here instead of `[metrics] listen`, so the
        /// processes of one machine can share one configuration file.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Manage local domains.
    Domain {
        #[command(subcommand)]
        action: admin::DomainAction,
    },
    /// Manage users (mailboxes).
    User {
        #[command(subcommand)]
        action: admin::UserAction,
    },
    /// Manage the NAS clients the RADIUS server answers (source network, shared secret).
    Nas {
        #[command(subcommand)]
        action: nas::NasAction,
    },
    /// Show one message's whole history from the event log.
    Trace {
        /// The id from "250 2.0.0 Ok: queued as ID", or the message's Message-ID header.
        message_id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the allow and block lists (per user with --user, else global).
    List {
        #[command(subcommand)]
        list: lists::ListCommand,
    },
    /// Manage a user's address book (its addresses count as allowed senders).
    Addressbook {
        #[command(subcommand)]
        action: lists::AddressBookAction,
    },
    /// Score messages with the rules and classifier, with no bus: every hit and the
    /// disposition at each spam level.
    Score(scoring::ScoreArgs),
    /// Measure a labelled corpus: spam caught and ham lost at each spam level.
    Eval(scoring::EvalArgs),
    /// Train the statistical classifier from folders of ham and spam.
    Train(train::TrainArgs),
    /// What would move if the spam levels were different: replays `mail.scored` from the
    /// log through the live disposition function.
    Replay(replay::ReplayArgs),
    /// Record a user's verdict on a message (spam or ham) as an event: replay's
    /// `--labels feedback` and `pampa train --from-feedback` use it.
    Feedback(feedback::FeedbackArgs),
    /// Deliver a discarded or quarantined message to the recipient's inbox after all,
    /// while its body is still retained.
    Recover(recover::RecoverArgs),
    /// The DNS role's operator commands: reload, top, export.
    Dns {
        #[command(subcommand)]
        action: dns_cli::DnsAction,
    },
    /// The access sessions open now, projected from the accounting events.
    Sessions(sessions::SessionsArgs),
    /// One user's time online and traffic in a month, from the accounting events.
    Usage(sessions::UsageArgs),
    /// Check the event log against the mailboxes: every accepted copy in exactly one
    /// terminal state, none missing, none duplicated.
    Audit(audit::AuditArgs),
    /// Print the events of one subject (`access.acct`, `mail.>` …) from the log.
    Events(events::EventsArgs),
    /// Copy the embedded log (events, bodies, consumer positions) into NATS JetStream.
    MigrateLog(migrate::MigrateArgs),
    /// Check the NATS JetStream streams, bucket and consumers against the configuration.
    Streams {
        #[command(subcommand)]
        action: streams::StreamsAction,
    },
    /// DKIM signing keys of local domains.
    Dkim {
        #[command(subcommand)]
        action: outbound::DkimAction,
    },
    /// The relay's queue of outbound mail: list, show, retry, drop.
    Queue {
        #[command(subcommand)]
        action: outbound::QueueAction,
    },
    /// Inspect and re-queue dead letters.
    Dead {
        #[command(subcommand)]
        action: admin::DeadAction,
    },
}

/// The `--log-format` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What is logged without `RUST_LOG`: pampa's own `info`, and only the warnings of the
/// libraries, whose info lines (a migration that has nothing to do, a NATS connect) would
/// otherwise open every command's output; pampa logs what matters of those itself.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,async_nats=warn";

/// Logs to stderr at `RUST_LOG`'s levels (default [`DEFAULT_LOG_FILTER`]), as text or as
/// JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's own fields at the top level, the innermost span's fields (the
        // session, message or event ids) under "span", and every open span under "spans".
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pampa: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pampa: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let config = config::Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Up => roles::up(config).await,
        Command::Run {
            role,
            metrics_listen,
        } => {
            let mut config = config;
            if let Some(listen) = metrics_listen {
                config.metrics.listen = listen;
            }
            roles::run(config, role).await
        }
        Command::Domain { action } => admin::domain(&config, action).await,
        Command::User { action } => admin::user(&config, action).await,
        Command::Dead { action } => admin::dead(&config, action).await,
        Command::Dkim { action } => outbound::dkim(&config, action).await,
        Command::Queue { action } => outbound::queue(&config, action).await,
        Command::Nas { action } => nas::nas(&config, action).await,
        Command::List { list } => lists::list(&config, list).await,
        Command::Addressbook { action } => lists::addressbook(&config, action).await,
        Command::Trace { message_id, json } => trace::trace(&config, &message_id, json).await,
        Command::Train(args) => train::train(&config, &args).await,
        Command::Audit(args) => audit::audit(&config, &args).await,
        Command::Events(args) => events::events(&config, &args).await,
        Command::Streams { action } => streams::streams(&config, action).await,
        Command::MigrateLog(args) => migrate::migrate_log(&config, &args).await,
        Command::Dns { action } => dns_cli::dns(&config, &action).await,
        Command::Sessions(args) => sessions::sessions(&config, &args).await,
        Command::Usage(args) => sessions::usage(&config, &args).await,
        Command::Feedback(args) => feedback::feedback(&config, &args).await,
        Command::Recover(args) => recover::recover(&config, &args).await,
        Command::Score(args) => scoring::score(&config, &args),
        Command::Eval(args) => scoring::eval(&config, &args),
        Command::Replay(args) => replay::replay(&config, &args).await,
    }
}
