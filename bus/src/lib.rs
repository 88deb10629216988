//! The event log: the one place where pampa's facts are made durable and read back.
//!
//! Two backends keep the same promises behind one type, [`EventLog`]:
//! JetStream for production, and an embedded SQLite log for `pampa up` with no
//! infrastructure. The same contract test suite (`tests/contract.rs`) runs against both.
//!
//! # Layout
//! - [`config`]: the `[bus]` section of the configuration.
//! - [`event`]: what goes in ([`OutgoingEvent`]) and what comes out ([`Delivery`], [`StoredEvent`]).
//! - [`embedded`]: the SQLite log with group commit, cursors and in-flight redelivery.
//! - [`jetstream`]: streams, durable pull consumers and the object store on NATS.
//! - [`blob`]: claim checks, and the file store for the embedded log's large bodies.
//! - [`runner`]: consume → process → publish → ack, written once for every stage.
//! - [`metrics`]: metric names of this crate.
#![warn(missing_docs)]

pub mod blob;
pub mod config;
pub mod embedded;
mod error;
pub mod event;
pub mod jetstream;
pub mod metrics;
pub mod runner;
pub mod streams;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, TryStreamExt};
use pampa_schemas::BlobRef;

/// How long a republished id is dropped as a duplicate, on both backends: a stage that
/// crashes and republishes within it, or a NAS that retransmits an accounting record,
/// is recorded once. JetStream keeps the window in its stream; the embedded log in
/// memory (`embedded::recent`).
pub const DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

pub use config::BusConfig;
pub use error::BusError;
pub use event::{Delivery, OutgoingEvent, PublishAck, StoredEvent};
pub use runner::{Handler, HandlerError, Runner};

/// How a durable consumer behaves: its name, what it reads, and its retry limits.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name; also the stage name in metrics and dead letters.
    pub name: String,
    /// Subject filter, NATS style (`mail.received`, `mail.>`).
    pub filter: String,
    /// Tries before an input goes to `dead.<name>`.
    pub max_deliver: u32,
    /// How long an unacked delivery stays invisible before it is redelivered.
    pub ack_wait: Duration,
}

impl ConsumerSpec {
    /// The consumer `name` reading `filter`, with the retry limits of `config`: what the
    /// stage runner opens, and what `pampa streams check` and `migrate-log` expect.
    pub fn new(name: &str, filter: &str, config: &BusConfig) -> Self {
        ConsumerSpec {
            name: name.to_owned(),
            filter: filter.to_owned(),
            max_deliver: config.max_deliver.max(1),
            ack_wait: config.ack_wait,
        }
    }
}

/// The event log, on one of its two backends.
#[derive(Clone)]
pub enum EventLog {
    /// SQLite under `data_dir`, for a single process.
    Embedded(embedded::EmbeddedLog),
    /// A NATS JetStream server or cluster.
    JetStream(jetstream::JetStreamLog),
}

impl EventLog {
    /// Opens the backend named by `config.url`, `embedded` or a `nats://` URL, for the
    /// process that runs the roles.
    pub async fn open(config: &BusConfig, data_dir: &std::path::Path) -> Result<Self, BusError> {
        Self::open_as(config, data_dir, embedded::Mode::Server).await
    }

    /// Opens the backend for a command-line tool beside a running server.
    pub async fn open_tool(
        config: &BusConfig,
        data_dir: &std::path::Path,
    ) -> Result<Self, BusError> {
        Self::open_as(config, data_dir, embedded::Mode::Tool).await
    }

    async fn open_as(
        config: &BusConfig,
        data_dir: &std::path::Path,
        mode: embedded::Mode,
    ) -> Result<Self, BusError> {
        if config.url == "embedded" {
            Ok(EventLog::Embedded(
                embedded::EmbeddedLog::open(data_dir, config, mode).await?,
            ))
        } else if config.url.starts_with("nats://") || config.url.starts_with("tls://") {
            Ok(EventLog::JetStream(
                jetstream::JetStreamLog::connect(config).await?,
            ))
        } else {
            Err(BusError::Config(format!(
                "bus.url must be \"embedded\" or a nats:// URL, not {:?}",
                config.url
            )))
        }
    }

    /// Publishes one event and waits until it is durable. A repeated id is acknowledged
    /// as a duplicate and not stored twice.
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<PublishAck, BusError> {
        let started = Instant::now();
        let result = match self {
            EventLog::Embedded(log) => log.publish(event).await,
            EventLog::JetStream(log) => log.publish(event).await,
        };
        self.record_publish(started, result)
    }

    /// Stores a message body and publishes the event that carries its claim check
    /// (`blob`, from [`blob::blob_ref`] over the same `bytes`); answers once both are
    /// durable. Takes the body by value: the embedded log moves it into its writer. The embedded log writes a body of ordinary size in the event's own
    /// transaction, so both share one fsync with the rest of the group commit; JetStream
    /// stores the body in its object store first, then publishes.
    pub async fn publish_with_body(
        &self,
        event: &OutgoingEvent,
        blob: &BlobRef,
        bytes: Vec<u8>,
    ) -> Result<PublishAck, BusError> {
        let started = Instant::now();
        let result = match self {
            EventLog::Embedded(log) => log.publish_with_body(event, blob, bytes).await,
            EventLog::JetStream(log) => match log.put_blob(blob, &bytes).await {
                Ok(()) => log.publish(event).await,
                Err(error) => Err(error),
            },
        };
        self.record_publish(started, result)
    }

    /// Counts one publish and its time.
    fn record_publish(
        &self,
        started: Instant,
        result: Result<PublishAck, BusError>,
    ) -> Result<PublishAck, BusError> {
        ::metrics::histogram!(metrics::PUBLISH_DURATION_SECONDS, "backend" => self.backend_name())
            .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(ack) if ack.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(_) => "error",
        };
        ::metrics::counter!(metrics::PUBLISHED_TOTAL, "backend" => self.backend_name(), "outcome" => outcome)
            .increment(1);
        result
    }

    /// Publishes many events at once and waits until all are durable; the acks come in
    /// the order of `events`. One call costs one round trip to the log instead of one
    /// per event: the embedded log writes the whole batch in one transaction, and
    /// JetStream gets every publish before any ack is awaited. Duplicates are acked as
    /// in [`EventLog::publish`], within the batch too.
    ///
    /// `Err` means some events may be stored and others not; publishing the same batch
    /// again is safe, as the ids deduplicate.
    pub async fn publish_batch(
        &self,
        events: &[OutgoingEvent],
    ) -> Result<Vec<PublishAck>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let result = match self {
            EventLog::Embedded(log) => log.publish_batch(events).await,
            EventLog::JetStream(log) => log.publish_batch(events).await,
        };
        // Once per batch, not per event: these are registry lookups.
        ::metrics::histogram!(metrics::PUBLISH_DURATION_SECONDS, "backend" => self.backend_name())
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(acks) => {
                let duplicates = acks.iter().filter(|a| a.duplicate).count() as u64;
                let stored = acks.len() as u64 - duplicates;
                for (outcome, n) in [("stored", stored), ("duplicate", duplicates)] {
                    if n > 0 {
                        ::metrics::counter!(metrics::PUBLISHED_TOTAL, "backend" => self.backend_name(), "outcome" => outcome)
                            .increment(n);
                    }
                }
            }
            Err(_) => {
                ::metrics::counter!(metrics::PUBLISHED_TOTAL, "backend" => self.backend_name(), "outcome" => "error")
                    .increment(events.len() as u64);
            }
        }
        result
    }

    /// Opens (creating if needed) a durable consumer.
    pub async fn consumer(&self, spec: ConsumerSpec) -> Result<Consumer, BusError> {
        match self {
            EventLog::Embedded(log) => Ok(Consumer::Embedded(log.consumer(spec).await?)),
            EventLog::JetStream(log) => Ok(Consumer::JetStream(log.consumer(spec).await?)),
        }
    }

    /// Reads every stored event matching `filter` published at or after `since`, in log
    /// order, with no side effects on any consumer.
    pub async fn replay(
        &self,
        filter: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, BusError> {
        self.replay_stream(filter, since).try_collect().await
    }

    /// [`EventLog::replay`] as a stream, for ranges too long to hold in memory: the
    /// events stored when it starts, in log order, read a page at a time.
    pub fn replay_stream(
        &self,
        filter: &str,
        since: DateTime<Utc>,
    ) -> BoxStream<'static, Result<StoredEvent, BusError>> {
        match self {
            EventLog::Embedded(log) => log.replay_stream(filter, since),
            EventLog::JetStream(log) => log.replay_stream(filter, since),
        }
    }

    /// Stores a message body durably and returns its claim check.
    pub async fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<BlobRef, BusError> {
        let blob = blob::blob_ref(key, bytes);
        match self {
            EventLog::Embedded(log) => log.put_blob(&blob, bytes).await?,
            EventLog::JetStream(log) => log.put_blob(&blob, bytes).await?,
        }
        Ok(blob)
    }

    /// Reads a body back and checks it against its claim check.
    pub async fn get_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, BusError> {
        let bytes = match self {
            EventLog::Embedded(log) => log.get_blob(&blob.key).await?,
            EventLog::JetStream(log) => log.get_blob(&blob.key).await?,
        };
        blob::verify(blob, &bytes)?;
        Ok(bytes)
    }

    /// Whether the backend can take writes now (for `/readyz`).
    pub async fn is_ready(&self) -> bool {
        match self {
            EventLog::Embedded(_) => true,
            EventLog::JetStream(log) => log.is_connected(),
        }
    }

    /// `embedded` or `jetstream`, for metric labels and messages.
    pub fn backend_name(&self) -> &'static str {
        match self {
            EventLog::Embedded(_) => "embedded",
            EventLog::JetStream(_) => "jetstream",
        }
    }
}

/// A durable consumer, on either backend.
pub enum Consumer {
    /// Embedded backend.
    Embedded(embedded::EmbeddedConsumer),
    /// JetStream backend.
    JetStream(jetstream::JetStreamConsumer),
}

impl Consumer {
    /// Waits up to `wait` for at most `max` deliveries; returns an empty batch on timeout.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        match self {
            Consumer::Embedded(c) => c.fetch(max, wait).await,
            Consumer::JetStream(c) => c.fetch(max, wait).await,
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        match self {
            Consumer::Embedded(c) => &c.spec.name,
            Consumer::JetStream(c) => &c.spec.name,
        }
    }
}
