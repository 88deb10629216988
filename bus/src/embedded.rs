//! The embedded event log: SQLite under `data_dir`, for one process with no infrastructure.
//!
//! It keeps JetStream's promises on one machine:
//! - **durable publish**: a publish is answered only after its transaction commits with
//!   and its WAL is fsynced. One writer task batches the commands that arrive together
//!   into one transaction (group commit), so concurrent SMTP sessions share an fsync
//!   instead of queueing for one each; the fsync runs on a thread of its own while the
//!   next group is written (see [`syncer`]);
//! - **deduplication**: a second publish of an id within [`crate::DUPLICATE_WINDOW`] is a
//!   duplicate, as on JetStream (the window is kept in memory: see [`recent`]);
//! - **durable consumers**: a cursor per consumer, plus a `pending` row per handed-out
//!   event that stays until it is acked, so a crash before the ack redelivers it;
//! - **retention**: events older than `max_age` are purged, like JetStream's limits policy;
//! - **bodies**: stored in the log, in the transaction of the event that carries their
//!   claim check (large ones as files: [`INLINE_BODY_MAX`]).
//!
//! A SQLite log serves one process: several `pampa` processes must share JetStream.

use std::{
    path::Path,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, TimeZone, Utc};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use pampa_schemas::{subjects, BlobRef};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Connection, Row, SqliteConnection, SqlitePool,
};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::{
    blob::FileBlobStore,
    event::{AckHandle, Delivery},
    BusConfig, BusError, ConsumerSpec, OutgoingEvent, PublishAck, StoredEvent,
};

/// Rows per page of a replay: large enough that a page costs one query per ~MB.
const REPLAY_PAGE: usize = 1000;

mod recent;
mod syncer;

use recent::{hash_id, RecentIds, Slot};
use syncer::{CloseOnDrop, Committed, Syncer};

/// The events table. There is deliberately no index on `msg_id`: see [`recent`].
const EVENTS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id       TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    headers      BLOB    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_subject_seq ON events (subject, seq);
CREATE INDEX IF NOT EXISTS events_published_at ON events (published_at);
"#;

/// Most ids the duplicate window holds (about 50 bytes each in memory, so 50 MB at
/// most). Past it the oldest go first: above ~8,000 events/s sustained the window is
/// shorter than 120 s, for ids that are never republished in practice then anyway
/// (a stage's republish after a crash comes within seconds of the first).
const RECENT_IDS_CAPACITY: usize = 1_000_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS consumers (
    name   TEXT    PRIMARY KEY,
    filter TEXT    NOT NULL,
    cursor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    consumer   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE TABLE IF NOT EXISTS bodies (
    key       TEXT    NOT NULL UNIQUE,
    bytes     BLOB    NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bodies_stored_at ON bodies (stored_at);
"#;

/// Bodies up to this size are stored in the log itself, in the transaction of the event
/// that carries their claim check; larger ones are files beside it ([`FileBlobStore`]).
///
/// Why: a body as a file cost a file create, two fsyncs (the data, then the directory
/// entry) and then the log's own fsync for the event, one after the other, for every
/// message; that was most of ingest's time per message (`ops/bench/smtp.sh`). In the
/// log, the body shares the group commit's one fsync with every other message of the
/// group, and body and event become durable together. SQLite reads blobs of this size
/// from its pages about as fast as from a file of their own; far larger ones are better
/// as files, and would hold up the group commit of everyone else while they are copied.
pub const INLINE_BODY_MAX: usize = 256 * 1024;

/// Most events one purge command deletes (small rows).
const PURGE_EVENTS_SLICE: u64 = 4096;
/// Most bodies one purge command deletes: at most 64 MB of pages to free.
const PURGE_BODIES_SLICE: u64 = 256;
/// Bodies outlive the retention cutoff by this much (see the purge).
const PURGE_BODY_MARGIN_MS: i64 = 60_000;

/// Most commands folded into one transaction.
const MAX_BATCH: usize = 512;

/// Who opens the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The process that runs the roles.
    Server,
    /// A command-line tool that reads or publishes beside a running server.
    Tool,
}

/// The embedded log. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    reader: SqlitePool,
    /// Each consumer's wake-up, with its filter: after an fsync only the consumers whose
    /// filter matches a subject just published are woken. (One wake-up for all made
    /// every stage run an empty fetch transaction for every event of every other stage.)
    consumers: std::sync::Mutex<Vec<(String, std::sync::Weak<Notify>)>>,
    blobs: FileBlobStore,
}

impl Inner {
    /// Wakes the consumers waiting for any of the `published` subjects (called after
    /// their fsync).
    fn wake_consumers(&self, published: &[String]) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        consumers.retain(|(filter, wake)| match wake.upgrade() {
            Some(wake) => {
                if published.iter().any(|s| subjects::matches(filter, s)) {
                    wake.notify_waiters();
                }
                true
            }
            None => false,
        });
    }
}

enum Settle {
    Ack,
    Nak(Duration),
    Progress(Duration),
}

/// A message body to store in the log, under its claim check's key.
struct Body {
    key: String,
    bytes: Vec<u8>,
}

enum Command {
    /// One event, with the body it carries the claim check of, if that is stored with it.
    Publish(
        OutgoingEvent,
        Option<Body>,
        oneshot::Sender<Result<PublishAck, BusError>>,
    ),
    /// A body alone, answered once it is durable.
    PutBody(Body, oneshot::Sender<Result<(), BusError>>),
    /// Many events with one answer: one command, so one slot in the writer's batch and
    /// one wake-up of the caller, however many events it carries.
    PublishBatch(
        Vec<OutgoingEvent>,
        oneshot::Sender<Result<Vec<PublishAck>, BusError>>,
    ),
    Register(ConsumerSpec, oneshot::Sender<Result<(), BusError>>),
    Fetch(
        ConsumerSpec,
        usize,
        oneshot::Sender<Result<Vec<(StoredEvent, u32)>, BusError>>,
    ),
    Settle(String, i64, Settle, oneshot::Sender<Result<(), BusError>>),
    /// Removes events and bodies stored before a time; answers how many of each went.
    Purge(i64, oneshot::Sender<Result<(u64, u64), BusError>>),
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// SQL that narrows a NATS filter down; the exact match is checked in Rust afterwards.
fn filter_sql(filter: &str) -> (&'static str, String) {
    if !filter.split('.').any(|t| t == "*" || t == ">") {
        return ("subject = ?", filter.to_owned());
    }
    let literal: Vec<&str> = filter
        .split('.')
        .take_while(|t| *t != "*" && *t != ">")
        .collect();
    let mut glob = String::new();
    for token in literal {
        for ch in token.chars() {
            match ch {
                '*' | '?' | '[' | ']' => {
                    glob.push('[');
                    glob.push(ch);
                    glob.push(']');
                }
                _ => glob.push(ch),
            }
        }
        glob.push('.');
    }
    glob.push('*');
    ("subject GLOB ?", glob)
}

fn encode_headers(headers: &[(String, String)]) -> Vec<u8> {
    rmp_serde::to_vec(headers).unwrap_or_default()
}

fn decode_headers(bytes: &[u8]) -> Vec<(String, String)> {
    rmp_serde::from_slice(bytes).unwrap_or_default()
}

fn stored_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    let seq: i64 = row.try_get("seq")?;
    let headers: Vec<u8> = row.try_get("headers")?;
    Ok(StoredEvent {
        sequence: seq as u64,
        subject: row.try_get("subject")?,
        id: row.try_get("msg_id")?,
        headers: decode_headers(&headers),
        payload: row.try_get("payload")?,
        published_at: to_time(row.try_get("published_at")?),
    })
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log under `data_dir/log/`, with its bodies inside it
    /// and the large ones under `data_dir/blobs/`. A [`Mode::Server`] takes over from the process before it: the
    /// events that process left in flight are handed out again at once, and it purges by
    /// retention. A [`Mode::Tool`] (the CLI beside a running server) does neither.
    pub async fn open(data_dir: &Path, config: &BusConfig, mode: Mode) -> Result<Self, BusError> {
        let dir = data_dir.join("log");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join("events.db");
        // The server fsyncs the WAL itself, off the writer (see [`syncer`]). A CLI tool
        // publishes rarely and lets each commit fsync too, so a server that reads its
        // events right after the commit reads durable ones; its replies still go through
        // the syncer, for a duplicate ack (no page written, so no fsync in the commit)
        // may name an event the server has not synced yet.
        let synchronous = match mode {
            Mode::Server => SqliteSynchronous::Normal,
            Mode::Tool => SqliteSynchronous::Full,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10));
        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::raw_sql(EVENTS_TABLE).execute(&mut writer).await?;
        drop_unique_ids(&mut writer).await?;
        sqlx::raw_sql(SCHEMA).execute(&mut writer).await?;
        // The previous process is gone: whatever it held in flight is handed out again now.
        sqlx::query("UPDATE pending SET visible_at = 0")
            .execute(&mut writer)
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (commands, receiver) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            commands,
            reader,
            consumers: std::sync::Mutex::new(Vec::new()),
            blobs: FileBlobStore::new(data_dir.join("blobs")),
        });
        // The server reads the duplicate window now, before it serves, so the first
        // publish does not wait for it; a CLI tool only if it publishes (most only read).
        let mut recent = RecentIds::default();
        if mode == Mode::Server {
            refresh_recent(&mut writer, &mut recent).await?;
        }
        // The WAL exists from the first write above, and stays while the writer's
        // connection is open (SQLite removes it only when the last one closes).
        let wal = std::fs::File::open(dir.join("events.db-wal"))?;
        // A process that died between a commit and its fsync may have left events only
        // in the page cache: make them durable before any consumer sees them.
        wal.sync_data()?;
        let syncer = Syncer::start(wal, Arc::downgrade(&inner))?;
        tokio::spawn(write_loop(writer, receiver, recent, syncer));
        let log = EmbeddedLog { inner };
        if mode == Mode::Server {
            log.spawn_retention(config.max_age);
        }
        Ok(log)
    }

    fn spawn_retention(&self, max_age: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let log = EmbeddedLog { inner };
                let cutoff = SystemTime::now()
                    .checked_sub(max_age)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                match log.purge_before(cutoff).await {
                    Ok((events, blobs)) if events + blobs > 0 => {
                        tracing::info!(events, blobs, "Retention purged old events and bodies.")
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Retention purge failed; it runs again in an hour.")
                    }
                }
            }
        });
    }

    /// Removes events and bodies stored before `cutoff`; returns (events, bodies) removed.
    pub async fn purge_before(&self, cutoff: SystemTime) -> Result<(u64, u64), BusError> {
        let cutoff_ms = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(ms)
            .unwrap_or(0);
        // In slices, each its own command: a month of bodies deleted in one transaction
        // would hold the single writer (and so every publish) for as long as SQLite needs
        // to walk their pages.
        let (mut events, mut bodies) = (0, 0);
        loop {
            let (e, b) = self.call(|reply| Command::Purge(cutoff_ms, reply)).await?;
            events += e;
            bodies += b;
            if e < PURGE_EVENTS_SLICE && b < PURGE_BODIES_SLICE {
                break;
            }
        }
        let files = self.inner.blobs.purge_older_than(cutoff).await?;
        Ok((events, bodies + files))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Command,
    ) -> Result<T, BusError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .await
            .map_err(|_| BusError::Unavailable("embedded log writer stopped".into()))?;
        answer
            .await
            .map_err(|_| BusError::Unavailable("embedded log writer stopped".into()))?
    }

    /// See [`crate::EventLog::publish`].
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<PublishAck, BusError> {
        self.call(|reply| Command::Publish(event.clone(), None, reply))
            .await
    }

    /// See [`crate::EventLog::publish_with_body`]: a body up to [`INLINE_BODY_MAX`] goes
    /// into the event's own transaction, a larger one to a file first.
    pub async fn publish_with_body(
        &self,
        event: &OutgoingEvent,
        blob: &BlobRef,
        bytes: Vec<u8>,
    ) -> Result<PublishAck, BusError> {
        if bytes.len() > INLINE_BODY_MAX {
            self.inner.blobs.put(blob, &bytes).await?;
            return self.publish(event).await;
        }
        let body = Body {
            key: blob.key.clone(),
            bytes,
        };
        self.call(|reply| Command::Publish(event.clone(), Some(body), reply))
            .await
    }

    /// Stores a body durably: see [`EmbeddedLog::publish_with_body`] for where.
    pub async fn put_blob(&self, blob: &BlobRef, bytes: &[u8]) -> Result<(), BusError> {
        if bytes.len() > INLINE_BODY_MAX {
            return self.inner.blobs.put(blob, bytes).await;
        }
        let body = Body {
            key: blob.key.clone(),
            bytes: bytes.to_vec(),
        };
        self.call(|reply| Command::PutBody(body, reply)).await
    }

    /// Reads a body: from the log, else from its file (a large body, or one stored
    /// before bodies moved into the log).
    pub async fn get_blob(&self, key: &str) -> Result<Vec<u8>, BusError> {
        let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT bytes FROM bodies WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.inner.reader)
            .await?;
        match stored {
            Some(bytes) => Ok(bytes),
            None => self.inner.blobs.get(key).await,
        }
    }

    /// See [`crate::EventLog::publish_batch`]: one writer command, so one transaction
    /// (with whatever else is queued) and one reply for the whole batch.
    pub async fn publish_batch(
        &self,
        events: &[OutgoingEvent],
    ) -> Result<Vec<PublishAck>, BusError> {
        self.call(|reply| Command::PublishBatch(events.to_vec(), reply))
            .await
    }

    /// See [`crate::EventLog::consumer`].
    pub async fn consumer(&self, spec: ConsumerSpec) -> Result<EmbeddedConsumer, BusError> {
        self.call(|reply| Command::Register(spec.clone(), reply))
            .await?;
        let wake = Arc::new(Notify::new());
        self.inner
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((spec.filter.clone(), Arc::downgrade(&wake)));
        Ok(EmbeddedConsumer {
            log: self.clone(),
            spec,
            wake,
        })
    }

    /// See [`crate::EventLog::replay_stream`]. Reads in pages by sequence number, so a
    /// long range holds neither all its events in memory nor one long read transaction.
    pub fn replay_stream(
        &self,
        filter: &str,
        since: DateTime<Utc>,
    ) -> BoxStream<'static, Result<StoredEvent, BusError>> {
        let (clause, param) = filter_sql(filter);
        let sql = format!(
            "SELECT seq, msg_id, subject, headers, payload, published_at FROM events \
             WHERE seq > ? AND seq <= ? AND published_at >= ? AND {clause} \
             ORDER BY seq LIMIT {REPLAY_PAGE}"
        );
        let reader = self.inner.reader.clone();
        let filter = filter.to_owned();
        let since = since.timestamp_millis();
        // (after this sequence, up to the last one stored at the start); `None` when done.
        let pages = futures::stream::try_unfold(Some((0i64, None)), move |state| {
            let (reader, sql, param, filter) =
                (reader.clone(), sql.clone(), param.clone(), filter.clone());
            async move {
                let Some((after, bound)) = state else {
                    return Ok(None);
                };
                let bound: i64 = match bound {
                    Some(bound) => bound,
                    None => {
                        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
                            .fetch_one(&reader)
                            .await?
                    }
                };
                let rows = sqlx::query(&sql)
                    .bind(after)
                    .bind(bound)
                    .bind(since)
                    .bind(param)
                    .fetch_all(&reader)
                    .await?;
                let full = rows.len() == REPLAY_PAGE;
                let mut events = Vec::with_capacity(rows.len());
                let mut last = after;
                for row in &rows {
                    let event = stored_from_row(row)?;
                    last = event.sequence as i64;
                    if subjects::matches(&filter, &event.subject) {
                        events.push(Ok(event));
                    }
                }
                let next = full.then_some((last, Some(bound)));
                Ok::<_, BusError>(Some((futures::stream::iter(events), next)))
            }
        });
        pages.try_flatten().boxed()
    }
}

/// A durable consumer of the embedded log.
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    /// What this consumer reads.
    pub spec: ConsumerSpec,
    /// Notified when events matching its filter are on disk.
    wake: Arc<Notify>,
}

impl EmbeddedConsumer {
    /// See [`crate::Consumer::fetch`].
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let published = self.wake.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let batch = self
                .log
                .call(|reply| Command::Fetch(self.spec.clone(), max.max(1), reply))
                .await?;
            if !batch.is_empty() {
                let pending = self.lag().await.unwrap_or(0);
                return Ok(batch
                    .into_iter()
                    .map(|(event, attempt)| Delivery {
                        handle: AckHandle::Embedded(EmbeddedAck {
                            log: self.log.clone(),
                            consumer: self.spec.name.clone(),
                            seq: event.sequence as i64,
                            ack_wait: self.spec.ack_wait,
                        }),
                        event,
                        attempt,
                        pending,
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // A nak'd event becomes visible with no publish to wake us, so poll too.
            let nap = (deadline - now).min(Duration::from_millis(200));
            tokio::select! {
                _ = published => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn lag(&self) -> Result<u64, BusError> {
        let (clause, param) = filter_sql(&self.spec.filter);
        let sql = format!(
            "SELECT COUNT(*) FROM events WHERE seq > (SELECT cursor FROM consumers WHERE name = ?) AND {clause}"
        );
        let count: i64 = sqlx::query_scalar(&sql)
            .bind(&self.spec.name)
            .bind(param)
            .fetch_one(&self.log.inner.reader)
            .await?;
        Ok(count as u64)
    }
}

/// Where one durable consumer of the embedded log stands: what `pampa migrate-log` needs
/// to start its JetStream twin at the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    /// The durable name.
    pub name: String,
    /// Its subject filter.
    pub filter: String,
    /// The first sequence it has not acked: its oldest pending delivery, else the one
    /// after its cursor. Everything below is done.
    pub resume_at: u64,
    /// Deliveries handed out and not acked yet (in work, or waiting for a retry).
    pub pending: u64,
}

impl EmbeddedLog {
    /// Every durable consumer's position.
    pub async fn consumer_positions(&self) -> Result<Vec<ConsumerPosition>, BusError> {
        let rows: Vec<(String, String, i64, Option<i64>, i64)> = sqlx::query_as(
            "SELECT c.name, c.filter, c.cursor, \
             (SELECT MIN(p.seq) FROM pending p WHERE p.consumer = c.name), \
             (SELECT COUNT(*) FROM pending p WHERE p.consumer = c.name) \
             FROM consumers c ORDER BY c.name",
        )
        .fetch_all(&self.inner.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, filter, cursor, oldest_pending, pending)| ConsumerPosition {
                    name,
                    filter,
                    resume_at: oldest_pending.unwrap_or(cursor + 1).max(1) as u64,
                    pending: pending.max(0) as u64,
                },
            )
            .collect())
    }
}

/// Settles one embedded delivery.
pub(crate) struct EmbeddedAck {
    log: EmbeddedLog,
    consumer: String,
    seq: i64,
    ack_wait: Duration,
}

impl EmbeddedAck {
    async fn settle(&self, how: Settle) -> Result<(), BusError> {
        self.log
            .call(|reply| Command::Settle(self.consumer.clone(), self.seq, how, reply))
            .await
    }
    pub(crate) async fn ack(&self) -> Result<(), BusError> {
        self.settle(Settle::Ack).await
    }
    pub(crate) async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.settle(Settle::Nak(delay)).await
    }
    pub(crate) async fn in_progress(&self) -> Result<(), BusError> {
        self.settle(Settle::Progress(self.ack_wait)).await
    }
}

enum Reply {
    Publish(oneshot::Sender<Result<PublishAck, BusError>>, PublishAck),
    /// A body stored: answered, like a publish, only after the fsync.
    BodyStored(oneshot::Sender<Result<(), BusError>>),
    PublishBatch(
        oneshot::Sender<Result<Vec<PublishAck>, BusError>>,
        Vec<PublishAck>,
    ),
    Unit(oneshot::Sender<Result<(), BusError>>),
    Fetch(
        oneshot::Sender<Result<Vec<(StoredEvent, u32)>, BusError>>,
        Vec<(StoredEvent, u32)>,
    ),
    Purge(oneshot::Sender<Result<(u64, u64), BusError>>, (u64, u64)),
}

impl Reply {
    /// Whether the caller must wait for the fsync: it was told something is durable.
    fn is_publish(&self) -> bool {
        matches!(
            self,
            Reply::Publish(..) | Reply::PublishBatch(..) | Reply::BodyStored(..)
        )
    }
    fn send_ok(self) {
        // A caller that went away no longer needs its answer.
        let _ = match self {
            Reply::Publish(tx, ack) => tx.send(Ok(ack)).is_ok(),
            Reply::PublishBatch(tx, acks) => tx.send(Ok(acks)).is_ok(),
            Reply::Unit(tx) | Reply::BodyStored(tx) => tx.send(Ok(())).is_ok(),
            Reply::Fetch(tx, batch) => tx.send(Ok(batch)).is_ok(),
            Reply::Purge(tx, n) => tx.send(Ok(n)).is_ok(),
        };
    }
    fn send_err(self, error: &str) {
        let err = || BusError::Unavailable(error.to_owned());
        let _ = match self {
            Reply::Publish(tx, _) => tx.send(Err(err())).is_ok(),
            Reply::PublishBatch(tx, _) => tx.send(Err(err())).is_ok(),
            Reply::Unit(tx) | Reply::BodyStored(tx) => tx.send(Err(err())).is_ok(),
            Reply::Fetch(tx, _) => tx.send(Err(err())).is_ok(),
            Reply::Purge(tx, _) => tx.send(Err(err())).is_ok(),
        };
    }
}

impl Command {
    /// Answers the command with an error, unexecuted.
    fn fail(self, error: &str) {
        let err = || BusError::Unavailable(error.to_owned());
        // A caller that went away no longer needs its answer.
        let _ = match self {
            Command::Publish(_, _, tx) => tx.send(Err(err())).is_ok(),
            Command::PutBody(_, tx) => tx.send(Err(err())).is_ok(),
            Command::PublishBatch(_, tx) => tx.send(Err(err())).is_ok(),
            Command::Register(_, tx) => tx.send(Err(err())).is_ok(),
            Command::Fetch(_, _, tx) => tx.send(Err(err())).is_ok(),
            Command::Settle(_, _, _, tx) => tx.send(Err(err())).is_ok(),
            Command::Purge(_, tx) => tx.send(Err(err())).is_ok(),
        };
    }
}

/// The single writer: folds queued commands into one transaction each. Publish replies
/// wait for the syncer's next fsync; other replies go out after the commit.
async fn write_loop(
    mut conn: SqliteConnection,
    mut commands: mpsc::Receiver<Command>,
    mut recent: RecentIds,
    syncer: Arc<Syncer>,
) {
    let _close = CloseOnDrop(syncer.clone());
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while commands.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some(failure) = syncer.failure() {
            batch.drain(..).for_each(|c| c.fail(&failure));
            continue;
        }
        let mut replies = Vec::with_capacity(batch.len());
        // The lowest sequence this transaction inserted, and the subjects it inserted.
        let mut first_new = None;
        let mut subjects: Vec<String> = Vec::new();
        let publishes_queued = batch
            .iter()
            .any(|c| matches!(c, Command::Publish(..) | Command::PublishBatch(..)));
        let now = now_ms();
        let result: Result<(), sqlx::Error> = async {
            // IMMEDIATE takes the write lock up front, so a second process on the same file
            // (a CLI tool) makes this wait for busy_timeout instead of failing the commit
            // when a deferred read would have to be upgraded to a write.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            if publishes_queued {
                // Under the write lock: no other process can add ids until the commit.
                refresh_recent(&mut tx, &mut recent).await?;
            }
            // Runs of publishes go in as multi-row INSERTs: one statement per run instead
            // of one per event, which is most of the writer's cost under load. Other
            // commands run in their place, so the batch keeps its order.
            let mut publishes = Publishes::default();
            for command in batch.drain(..) {
                match command {
                    Command::Publish(event, body, reply) => {
                        // The body goes in first; the same transaction holds both, so
                        // neither is durable (nor its event visible) without the other.
                        if let Some(body) = body {
                            insert_body(&mut tx, &body, now).await?;
                        }
                        publishes.events.push(event);
                        publishes.waiting.push(Waiting::One(reply));
                    }
                    Command::PublishBatch(events, reply) => {
                        let n = events.len();
                        publishes.events.extend(events);
                        publishes.waiting.push(Waiting::Many(reply, n));
                    }
                    other => {
                        insert_events(
                            &mut tx,
                            &mut publishes,
                            &mut replies,
                            &mut recent,
                            &mut subjects,
                        )
                        .await?
                        .map(|seq| first_new.get_or_insert(seq));
                        // Consumers see only what is on disk: not this transaction's
                        // inserts, nor commits still waiting for their fsync.
                        let synced = syncer.visible_below();
                        let visible_below = first_new.map_or(synced, |seq| seq.min(synced));
                        replies.push(execute(&mut tx, other, visible_below).await?);
                    }
                }
            }
            if let Some(seq) = insert_events(
                &mut tx,
                &mut publishes,
                &mut replies,
                &mut recent,
                &mut subjects,
            )
            .await?
            {
                first_new.get_or_insert(seq);
            }
            tx.commit().await
        }
        .await;
        match result {
            // Publish answers wait for the fsync; the others may go now (a lost ack or
            // fetch only means a redelivery, which consumers expect).
            Ok(()) => {
                let (publishes, others): (Vec<Reply>, Vec<Reply>) =
                    replies.into_iter().partition(Reply::is_publish);
                others.into_iter().for_each(Reply::send_ok);
                if !publishes.is_empty() || first_new.is_some() {
                    syncer.committed(Committed {
                        first_seq: first_new,
                        subjects,
                        replies: publishes,
                    });
                }
            }
            Err(error) => {
                // The window may hold ids of the rolled-back inserts: read it again.
                recent.reset();
                tracing::error!(%error, "The embedded log could not commit; callers get an error and retry.");
                let text = error.to_string();
                replies.into_iter().for_each(|r| r.send_err(&text));
                // Commands drained but not executed dropped their senders: callers see an error.
                batch.clear();
            }
        }
    }
}

/// Most rows per multi-row INSERT: 5 parameters each, well under SQLite's 32,766.
const INSERT_ROWS: usize = 256;

/// Who waits for which of the [`Publishes`]' events, in order.
enum Waiting {
    One(oneshot::Sender<Result<PublishAck, BusError>>),
    Many(oneshot::Sender<Result<Vec<PublishAck>, BusError>>, usize),
}

/// A run of publishes in one transaction: the events, and the callers who wait for them
/// (each `Waiting` takes the next one or `n` acks).
#[derive(Default)]
struct Publishes {
    events: Vec<OutgoingEvent>,
    waiting: Vec<Waiting>,
}

/// Splits `n` rows into INSERTs of 256, then powers of two: the statements are prepared
/// once and cached by their text, so a handful of sizes keeps the cache hot, where every
/// size from 1 to 255 would keep preparing new ones.
fn insert_chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= INSERT_ROWS {
            INSERT_ROWS
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// What becomes of one event of a run of publishes.
enum Fate {
    /// Inserted now, at this sequence (once the insert has run).
    New(Option<i64>),
    /// Already stored within the duplicate window, at this sequence.
    Stored(i64),
    /// The same id as the `n`th event of this run.
    SameAs(usize),
}

/// Inserts the pending publishes (emptying `publishes`) and queues their replies, in
/// order; returns the lowest sequence inserted, and adds the subjects inserted to
/// `subjects`. An id already in the duplicate window is
/// a duplicate: its ack names the stored sequence, and nothing is inserted.
async fn insert_events(
    conn: &mut SqliteConnection,
    publishes: &mut Publishes,
    replies: &mut Vec<Reply>,
    recent: &mut RecentIds,
    subjects: &mut Vec<String>,
) -> Result<Option<i64>, sqlx::Error> {
    let Publishes { events, waiting } = std::mem::take(publishes);
    // Which events are new, and which repeat an id of the window or of this run.
    let hashes: Vec<u64> = events.iter().map(|e| hash_id(&e.id)).collect();
    let mut fates = Vec::with_capacity(events.len());
    let mut fresh = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let fate = match recent.get(hashes[i]) {
            Some(Slot::Pending(j)) if events[j].id == event.id => Fate::SameAs(j),
            Some(Slot::Stored(seq))
                if stored_id(conn, seq).await?.as_deref() == Some(&event.id) =>
            {
                Fate::Stored(seq)
            }
            // Not in the window, or another id with the same hash: a new event.
            _ => {
                recent.reserve(hashes[i], i);
                fresh.push(i);
                Fate::New(None)
            }
        };
        fates.push(fate);
    }
    for &i in &fresh {
        if !subjects.contains(&events[i].subject) {
            subjects.push(events[i].subject.clone());
        }
    }
    let at = now_ms();
    let mut at_row = 0;
    for size in insert_chunks(fresh.len()) {
        let chunk = &fresh[at_row..at_row + size];
        at_row += size;
        let mut sql = String::from(
            "INSERT INTO events (msg_id, subject, headers, payload, published_at) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?)"
            });
        }
        sql.push_str(" RETURNING seq");
        let mut query = sqlx::query(&sql);
        for &i in chunk {
            let event = &events[i];
            query = query
                .bind(&event.id)
                .bind(&event.subject)
                .bind(encode_headers(&event.headers))
                .bind(&event.payload)
                .bind(at);
        }
        // AUTOINCREMENT gives each row of the statement the next sequence, in the order
        // of its VALUES; RETURNING's own order is unspecified, so the sequences are
        // sorted back into that order instead of matched by id.
        let mut inserted: Vec<i64> = Vec::with_capacity(chunk.len());
        for row in query.fetch_all(&mut *conn).await? {
            inserted.push(row.try_get(0)?);
        }
        if inserted.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(
                "an insert returned fewer sequences than rows".into(),
            ));
        }
        inserted.sort_unstable();
        for (&i, &seq) in chunk.iter().zip(&inserted) {
            fates[i] = Fate::New(Some(seq));
            recent.stored(hashes[i], seq, at);
        }
    }
    let mut acks = Vec::with_capacity(events.len());
    let mut first_new = None;
    for fate in &fates {
        let (sequence, duplicate) = match *fate {
            Fate::New(Some(seq)) => (seq, false),
            Fate::Stored(seq) => (seq, true),
            Fate::SameAs(j) => match fates[j] {
                Fate::New(Some(seq)) => (seq, true),
                _ => return Err(sqlx::Error::Protocol("a publish produced no ack".into())),
            },
            Fate::New(None) => {
                return Err(sqlx::Error::Protocol("a publish produced no ack".into()))
            }
        };
        if !duplicate {
            first_new = Some(first_new.map_or(sequence, |first: i64| first.min(sequence)));
        }
        acks.push(PublishAck {
            sequence: sequence as u64,
            duplicate,
        });
    }
    let mut acks = acks.into_iter();
    for waiter in waiting {
        match waiter {
            Waiting::One(sender) => match acks.next() {
                Some(ack) => replies.push(Reply::Publish(sender, ack)),
                None => return Err(sqlx::Error::Protocol("a publish produced no ack".into())),
            },
            Waiting::Many(sender, n) => {
                let mine: Vec<PublishAck> = acks.by_ref().take(n).collect();
                if mine.len() != n {
                    return Err(sqlx::Error::Protocol("a publish produced no ack".into()));
                }
                replies.push(Reply::PublishBatch(sender, mine));
            }
        }
    }
    Ok(first_new)
}

/// The id stored at `seq`, to confirm a hit in the duplicate window.
async fn stored_id(conn: &mut SqliteConnection, seq: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT msg_id FROM events WHERE seq = ?")
        .bind(seq)
        .fetch_optional(conn)
        .await
}

/// Brings the duplicate window up to date inside the write transaction: the first time
/// (or after a failed one) from every event of the window, then from the rows another
/// process (a CLI tool) added since this writer's last insert.
async fn refresh_recent(
    conn: &mut SqliteConnection,
    recent: &mut RecentIds,
) -> Result<(), sqlx::Error> {
    let cutoff = now_ms() - ms(crate::DUPLICATE_WINDOW);
    let from_seq = if recent.loaded {
        recent.last_seq + 1
    } else {
        recent.reset();
        // The window's first row, found through the `published_at` index, and no more
        // than the newest `RECENT_IDS_CAPACITY` rows: the rest would expire at once.
        // (The first by time, not min(seq), which SQLite may answer by walking the whole
        // table in sequence order.)
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM events WHERE published_at >= ? ORDER BY published_at LIMIT 1",
        )
        .bind(cutoff)
        .fetch_optional(&mut *conn)
        .await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM events")
            .fetch_one(&mut *conn)
            .await?;
        recent.last_seq = last.unwrap_or(0);
        let newest = recent.last_seq - RECENT_IDS_CAPACITY as i64 + 1;
        first.map_or(i64::MAX, |first| first.max(newest))
    };
    let mut rows =
        sqlx::query("SELECT seq, msg_id, published_at FROM events WHERE seq >= ? ORDER BY seq")
            .bind(from_seq)
            .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let id: &str = row.try_get("msg_id")?;
        recent.stored(
            hash_id(id),
            row.try_get("seq")?,
            row.try_get("published_at")?,
        );
    }
    drop(rows);
    recent.loaded = true;
    recent.expire(cutoff, RECENT_IDS_CAPACITY);
    Ok(())
}

/// Upgrades a log made before the duplicate window: its `events` table had a UNIQUE
/// constraint on `msg_id`, which SQLite can only drop by rebuilding the table. Done once,
/// in one transaction; sequences (and so consumer cursors) are kept.
async fn drop_unique_ids(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if !table.is_some_and(|sql| sql.contains("UNIQUE")) {
        return Ok(());
    }
    tracing::info!("Upgrading the embedded log: event ids are now deduplicated within a window, so their unique index goes (once; this may take a while on a big log).");
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let high_water: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::raw_sql(
        "ALTER TABLE events RENAME TO events_with_unique_ids; \
         DROP INDEX IF EXISTS events_subject_seq; \
         DROP INDEX IF EXISTS events_published_at;",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(EVENTS_TABLE).execute(&mut *tx).await?;
    sqlx::raw_sql(
        "INSERT INTO events (seq, msg_id, subject, headers, payload, published_at) \
         SELECT seq, msg_id, subject, headers, payload, published_at FROM events_with_unique_ids; \
         DROP TABLE events_with_unique_ids;",
    )
    .execute(&mut *tx)
    .await?;
    // AUTOINCREMENT never reuses a sequence: keep the old high-water mark.
    if let Some(high_water) = high_water {
        sqlx::raw_sql("DELETE FROM sqlite_sequence WHERE name = 'events'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO sqlite_sequence (name, seq) SELECT 'events', max(?, coalesce(max(seq), 0)) FROM events")
            .bind(high_water)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Runs one command that is not a publish. A fetch hands out events below
/// `visible_below` only.
async fn execute(
    conn: &mut SqliteConnection,
    command: Command,
    visible_below: i64,
) -> Result<Reply, sqlx::Error> {
    match command {
        // The writer routes every publish through `insert_events`, which needs the
        // duplicate window; none reaches here.
        Command::Publish(..) | Command::PublishBatch(..) => Err(sqlx::Error::Protocol(
            "a publish reached the command executor".into(),
        )),
        Command::PutBody(body, reply) => {
            insert_body(conn, &body, now_ms()).await?;
            Ok(Reply::BodyStored(reply))
        }
        Command::Register(spec, reply) => {
            sqlx::query(
                "INSERT INTO consumers (name, filter, cursor) VALUES (?, ?, 0) \
                 ON CONFLICT (name) DO UPDATE SET filter = excluded.filter",
            )
            .bind(&spec.name)
            .bind(&spec.filter)
            .execute(&mut *conn)
            .await?;
            Ok(Reply::Unit(reply))
        }
        Command::Fetch(spec, max, reply) => {
            let batch = fetch(conn, &spec, max, visible_below).await?;
            Ok(Reply::Fetch(reply, batch))
        }
        Command::Settle(consumer, seq, how, reply) => {
            let query = match how {
                Settle::Ack => sqlx::query("DELETE FROM pending WHERE consumer = ? AND seq = ?"),
                Settle::Nak(delay) | Settle::Progress(delay) => {
                    sqlx::query("UPDATE pending SET visible_at = ? WHERE consumer = ? AND seq = ?")
                        .bind(now_ms().saturating_add(ms(delay)))
                }
            };
            query.bind(consumer).bind(seq).execute(&mut *conn).await?;
            Ok(Reply::Unit(reply))
        }
        Command::Purge(cutoff_ms, reply) => {
            let done = sqlx::query(
                "DELETE FROM events WHERE seq IN \
                 (SELECT seq FROM events WHERE published_at < ? ORDER BY published_at LIMIT ?)",
            )
            .bind(cutoff_ms)
            .bind(PURGE_EVENTS_SLICE as i64)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM pending WHERE seq NOT IN (SELECT seq FROM events)")
                .execute(&mut *conn)
                .await?;
            // A body is stored a moment before its event (same transaction, earlier clock
            // reading): the margin keeps it from going one purge before the event.
            let bodies = sqlx::query(
                "DELETE FROM bodies WHERE rowid IN \
                 (SELECT rowid FROM bodies WHERE stored_at < ? ORDER BY stored_at LIMIT ?)",
            )
            .bind(cutoff_ms.saturating_sub(PURGE_BODY_MARGIN_MS))
            .bind(PURGE_BODIES_SLICE as i64)
            .execute(&mut *conn)
            .await?;
            Ok(Reply::Purge(
                reply,
                (done.rows_affected(), bodies.rows_affected()),
            ))
        }
    }
}

/// Stores a body under its key; the same key again replaces it (a retried write).
async fn insert_body(
    conn: &mut SqliteConnection,
    body: &Body,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO bodies (key, bytes, stored_at) VALUES (?, ?, ?)")
        .bind(&body.key)
        .bind(&body.bytes)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Hands out redeliveries that are due first, then new events past the cursor and below
/// `visible_below` (the cursor stops there, so they come in a later fetch).
async fn fetch(
    conn: &mut SqliteConnection,
    spec: &ConsumerSpec,
    max: usize,
    visible_below: i64,
) -> Result<Vec<(StoredEvent, u32)>, sqlx::Error> {
    let now = now_ms();
    let invisible_until = now.saturating_add(ms(spec.ack_wait));
    let mut out = Vec::new();
    let due = sqlx::query(
        "SELECT e.seq, e.msg_id, e.subject, e.headers, e.payload, e.published_at, p.deliveries \
         FROM pending p JOIN events e ON e.seq = p.seq \
         WHERE p.consumer = ? AND p.visible_at <= ? ORDER BY p.seq LIMIT ?",
    )
    .bind(&spec.name)
    .bind(now)
    .bind(max as i64)
    .fetch_all(&mut *conn)
    .await?;
    for row in &due {
        let event = stored_from_row(row)?;
        let deliveries: i64 = row.try_get("deliveries")?;
        sqlx::query("UPDATE pending SET deliveries = deliveries + 1, visible_at = ? WHERE consumer = ? AND seq = ?")
            .bind(invisible_until)
            .bind(&spec.name)
            .bind(event.sequence as i64)
            .execute(&mut *conn)
            .await?;
        out.push((event, (deliveries + 1) as u32));
    }
    let room = max.saturating_sub(out.len());
    if room == 0 {
        return Ok(out);
    }
    let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM consumers WHERE name = ?")
        .bind(&spec.name)
        .fetch_one(&mut *conn)
        .await?;
    let (clause, param) = filter_sql(&spec.filter);
    let sql = format!(
        "SELECT seq, msg_id, subject, headers, payload, published_at FROM events \
         WHERE seq > ? AND seq < ? AND {clause} ORDER BY seq LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(cursor)
        .bind(visible_below)
        .bind(param)
        .bind(room as i64)
        .fetch_all(&mut *conn)
        .await?;
    let mut last = cursor;
    for row in &rows {
        let event = stored_from_row(row)?;
        last = event.sequence as i64;
        if !subjects::matches(&spec.filter, &event.subject) {
            continue;
        }
        sqlx::query(
            "INSERT INTO pending (consumer, seq, deliveries, visible_at) VALUES (?, ?, 1, ?)",
        )
        .bind(&spec.name)
        .bind(last)
        .bind(invisible_until)
        .execute(&mut *conn)
        .await?;
        out.push((event, 1));
    }
    if last != cursor {
        sqlx::query("UPDATE consumers SET cursor = ? WHERE name = ?")
            .bind(last)
            .bind(&spec.name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::filter_sql;

    #[test]
    fn inserts_come_in_few_sizes() {
        let sizes = |n| super::insert_chunks(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(255), vec![128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(600), vec![256, 256, 64, 16, 8]);
    }

    #[test]
    fn filters_become_sql() {
        assert_eq!(
            filter_sql("mail.received"),
            ("subject = ?", "mail.received".to_owned())
        );
        assert_eq!(
            filter_sql("mail.>"),
            ("subject GLOB ?", "mail.*".to_owned())
        );
        assert_eq!(
            filter_sql("dead.*"),
            ("subject GLOB ?", "dead.*".to_owned())
        );
        assert_eq!(filter_sql(">"), ("subject GLOB ?", "*".to_owned()));
    }
}
