//! The JetStream backend: streams with limits retention, durable pull consumers, and an
//! object-store bucket for bodies.

use std::time::Duration;

use async_nats::{
    connection::State,
    jetstream::{
        self,
        consumer::{pull, AckPolicy, DeliverPolicy},
        context::Context,
        message::PublishMessage,
        object_store::ObjectStore,
        stream::{RetentionPolicy, StorageType},
        AckKind,
    },
    HeaderMap,
};
use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use pampa_schemas::{subjects, BlobRef};

use crate::{
    event::{AckHandle, Delivery},
    BusConfig, BusError, ConsumerSpec, OutgoingEvent, PublishAck, StoredEvent,
};

/// The object-store bucket that holds message bodies.
pub const BODY_BUCKET: &str = "pampa-bodies";

/// A connection to JetStream with pampa's streams and bucket in place. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    context: Context,
    bodies: ObjectStore,
    /// The stream behind `bodies`, read directly (see [`JetStreamLog::get_blob`]).
    bodies_stream: jetstream::stream::Stream,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {error}"))
}

/// The stream that holds `subject`.
pub fn stream_for(subject: &str) -> Option<&'static str> {
    subjects::STREAMS
        .iter()
        .find(|(_, filter)| {
            let prefix = filter.trim_end_matches('>');
            subject.starts_with(prefix)
        })
        .map(|(name, _)| *name)
}

/// The JetStream message of an event: its headers, then the id as `Nats-Msg-Id`.
fn publish_message(event: &OutgoingEvent) -> PublishMessage {
    let mut headers = HeaderMap::new();
    for (name, value) in &event.headers {
        headers.insert(name.as_str(), value.as_str());
    }
    // `headers` replaces the whole map, so the message id goes on after it.
    PublishMessage::build()
        .headers(headers)
        .message_id(&event.id)
        .payload(event.payload.clone().into())
}

/// Connects to the server or cluster named by `config.url` without touching any stream.
pub(crate) async fn connect_context(
    config: &BusConfig,
) -> Result<(async_nats::Client, Context), BusError> {
    // A cluster is named as `nats://a:4222,nats://b:4222,…`: the client knows every
    // node from the start and moves to another when one goes down.
    let servers = config
        .url
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BusError::Config(format!("bad NATS URL {:?}: {e}", config.url)))?;
    // pampa logs the connection's changes itself (the process's default log filter keeps
    // async-nats to warnings): a reconnect is worth a line in a server's log, the first
    // connect of every CLI command is not.
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("pampa")
        .event_callback(move |event| {
            let lost = lost.clone();
            async move { log_connection_event(&event, &lost) }
        })
        .connect(servers)
        .await
        .map_err(|e| unavailable(&format!("cannot connect to NATS at {}", config.url), e))?;
    let mut context = jetstream::new(client.clone());
    context.set_timeout(config.publish_timeout);
    Ok((client, context))
}

/// Logs a change of the NATS connection: a loss as a warning, the reconnect after one
/// as information, the first connect only at debug level.
fn log_connection_event(event: &async_nats::Event, lost: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    match event {
        async_nats::Event::Connected => {
            if lost.swap(false, Ordering::Relaxed) {
                tracing::info!("Reconnected to NATS.");
            } else {
                tracing::debug!("Connected to NATS.");
            }
        }
        async_nats::Event::Disconnected => {
            lost.store(true, Ordering::Relaxed);
            tracing::warn!("Lost the connection to NATS; reconnecting.");
        }
        other => tracing::warn!(event = %other, "NATS connection event."),
    }
}

/// The streams pampa's events live in, as the configuration wants them.
pub(crate) fn stream_configs(config: &BusConfig) -> Vec<jetstream::stream::Config> {
    subjects::STREAMS
        .iter()
        .map(|(name, filter)| jetstream::stream::Config {
            name: (*name).to_owned(),
            subjects: vec![(*filter).to_owned()],
            retention: RetentionPolicy::Limits,
            max_age: config.max_age,
            storage: StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: crate::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .collect()
}

/// The object store of message bodies, as the configuration wants it.
pub(crate) fn body_bucket_config(config: &BusConfig) -> jetstream::object_store::Config {
    jetstream::object_store::Config {
        bucket: BODY_BUCKET.to_owned(),
        description: Some("Raw RFC 5322 bodies of received mail".to_owned()),
        max_age: config.max_age,
        storage: StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

/// The stream behind the body bucket (JetStream names an object store's stream so).
pub(crate) fn body_bucket_stream() -> String {
    format!("OBJ_{BODY_BUCKET}")
}

/// The durable pull consumer of a stage.
pub(crate) fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.name.clone()),
        filter_subject: spec.filter.clone(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // The runner counts tries and dead-letters on the last one itself, so the
        // server must never silently stop redelivering before that.
        max_deliver: -1,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    }
}

impl JetStreamLog {
    /// Connects and makes sure the streams `MAIL`, `ACCESS`, `DNS`, `DEAD` and the body
    /// bucket exist with the configured retention and replicas.
    pub async fn connect(config: &BusConfig) -> Result<Self, BusError> {
        let (client, context) = connect_context(config).await?;
        for stream in stream_configs(config) {
            let name = stream.name.clone();
            context
                .create_or_update_stream(stream)
                .await
                .map_err(|e| unavailable(&format!("cannot create stream {name}"), e))?;
        }
        let bodies = match context.get_object_store(BODY_BUCKET).await {
            Ok(store) => store,
            Err(_) => context
                .create_object_store(body_bucket_config(config))
                .await
                .map_err(|e| unavailable("cannot create the body bucket", e))?,
        };
        let bodies_stream = context
            .get_stream(body_bucket_stream())
            .await
            .map_err(|e| unavailable("cannot open the body bucket's stream", e))?;
        Ok(JetStreamLog {
            client,
            context,
            bodies,
            bodies_stream,
        })
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// See [`crate::EventLog::publish`].
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<PublishAck, BusError> {
        let ack = self
            .context
            .send_publish(event.subject.clone(), publish_message(event))
            .await
            .map_err(|e| unavailable("publish failed", e))?
            .await
            .map_err(|e| unavailable("publish was not acknowledged", e))?;
        Ok(PublishAck {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// See [`crate::EventLog::publish_batch`]. Every publish goes out before any ack is
    /// awaited, so the batch costs about one round trip to the server, not one per event.
    pub async fn publish_batch(
        &self,
        events: &[OutgoingEvent],
    ) -> Result<Vec<PublishAck>, BusError> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let future = self
                .context
                .send_publish(event.subject.clone(), publish_message(event))
                .await
                .map_err(|e| unavailable("publish failed", e))?;
            pending.push(future);
        }
        let acks = futures::future::join_all(
            pending
                .into_iter()
                .map(std::future::IntoFuture::into_future),
        )
        .await;
        acks.into_iter()
            .map(|ack| {
                let ack = ack.map_err(|e| unavailable("publish was not acknowledged", e))?;
                Ok(PublishAck {
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                })
            })
            .collect()
    }

    /// The stream that holds a consumer's subjects.
    async fn stream_of(&self, spec: &ConsumerSpec) -> Result<jetstream::stream::Stream, BusError> {
        let stream_name = stream_for(&spec.filter)
            .ok_or_else(|| BusError::Config(format!("no stream holds subject {}", spec.filter)))?;
        self.context
            .get_stream(stream_name)
            .await
            .map_err(|e| unavailable(&format!("cannot open stream {stream_name}"), e))
    }

    /// See [`crate::EventLog::consumer`].
    pub async fn consumer(&self, spec: ConsumerSpec) -> Result<JetStreamConsumer, BusError> {
        let stream = self.stream_of(&spec).await?;
        let mut config = consumer_config(&spec);
        // Where an existing consumer started is its own (`pampa migrate-log` starts one
        // after what the embedded log's consumer had done); the server refuses to change it.
        if let Ok(info) = stream.consumer_info(&spec.name).await {
            config.deliver_policy = info.config.deliver_policy;
        }
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| unavailable(&format!("cannot create consumer {}", spec.name), e))?;
        Ok(JetStreamConsumer { consumer, spec })
    }

    /// Creates the durable consumer of `spec` starting at stream sequence `start` (the
    /// first event it has not done), for `pampa migrate-log`.
    pub async fn create_consumer_at(
        &self,
        spec: &ConsumerSpec,
        start: u64,
    ) -> Result<(), BusError> {
        let stream = self.stream_of(spec).await?;
        let mut config = consumer_config(spec);
        config.deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: start.max(1),
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| unavailable(&format!("cannot create consumer {}", spec.name), e))?;
        Ok(())
    }

    /// Events stored in a stream.
    pub async fn stream_messages(&self, stream_name: &str) -> Result<u64, BusError> {
        let stream = self
            .context
            .get_stream(stream_name)
            .await
            .map_err(|e| unavailable(&format!("cannot open stream {stream_name}"), e))?;
        Ok(stream.cached_info().state.messages)
    }

    /// The last sequence of a stream (0 when empty).
    pub async fn last_sequence(&self, stream_name: &str) -> Result<u64, BusError> {
        let mut stream = self
            .context
            .get_stream(stream_name)
            .await
            .map_err(|e| unavailable(&format!("cannot open stream {stream_name}"), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable(&format!("cannot read stream {stream_name}"), e))?;
        Ok(info.state.last_sequence)
    }

    /// See [`crate::EventLog::replay_stream`]. Uses an ordered consumer, which leaves no
    /// state on the server, and stops at the last event stored when it started.
    pub fn replay_stream(
        &self,
        filter: &str,
        since: DateTime<Utc>,
    ) -> BoxStream<'static, Result<StoredEvent, BusError>> {
        let context = self.context.clone();
        let filter = filter.to_owned();
        let start = async move {
            let stream_name = stream_for(&filter)
                .ok_or_else(|| BusError::Config(format!("no stream holds subject {filter}")))?;
            let stream = context
                .get_stream(stream_name)
                .await
                .map_err(|e| unavailable(&format!("cannot open stream {stream_name}"), e))?;
            let start = time::OffsetDateTime::from_unix_timestamp_nanos(
                since.timestamp_nanos_opt().unwrap_or(0) as i128,
            )
            .map_err(|e| BusError::Config(format!("bad replay start: {e}")))?;
            let mut consumer = stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("cannot create replay consumer", e))?;
            let info = consumer
                .info()
                .await
                .map_err(|e| unavailable("cannot read replay consumer", e))?;
            if info.num_pending == 0 {
                return Ok::<_, BusError>(None);
            }
            let messages = consumer
                .messages()
                .await
                .map_err(|e| unavailable("cannot start replay", e))?;
            Ok(Some(messages))
        };
        futures::stream::once(start)
            .map_ok(|messages| {
                let Some(messages) = messages else {
                    return futures::stream::empty().boxed();
                };
                // Ends after the message the server says has nothing pending behind it.
                futures::stream::try_unfold((messages, false), |(mut messages, done)| async move {
                    if done {
                        return Ok(None);
                    }
                    let Some(message) = messages.next().await else {
                        return Ok(None);
                    };
                    let message = message.map_err(|e| unavailable("replay interrupted", e))?;
                    let (event, pending) = stored_from_message(&message)?;
                    Ok(Some((event, (messages, pending == 0))))
                })
                .boxed()
            })
            .try_flatten()
            .boxed()
    }

    /// Stores a body in the object store (each chunk is acknowledged by the server).
    pub async fn put_blob(&self, blob: &BlobRef, bytes: &[u8]) -> Result<(), BusError> {
        let mut reader = bytes;
        self.bodies
            .put(blob.key.as_str(), &mut reader)
            .await
            .map_err(|e| unavailable("cannot store body", e))?;
        Ok(())
    }

    /// Reads a body from the object store, by hand: its metadata message, then its chunks
    /// one by one, each with the stream's message-get API.
    ///
    /// Why not the object store's own `get`: it reads through a new ordered consumer per
    /// object, which the server keeps for 30 s after the read. nats-server 2.15 caps a
    /// stream at 1,000 consumers by default, so past ~33 body reads a second (summed over
    /// every stage) reads failed with "maximum consumers limit reached" and messages went
    /// to dead letters (`ops/bench/scaleout.sh` found it). Consumers were also half of
    /// nats-server's CPU per stage hop. The message-get API is answered by the stream's
    /// leader, so a body acknowledged by a quorum is always found, which a direct get from
    /// a lagging replica would not promise.
    pub async fn get_blob(&self, key: &str) -> Result<Vec<u8>, BusError> {
        // A second try covers a read that raced a re-`put` of the same key: the new
        // version's chunks are written first, then its metadata, then the old chunks go.
        match self.read_body_once(key).await? {
            BodyRead::Read(bytes) => Ok(bytes),
            BodyRead::ChunksGone => match self.read_body_once(key).await? {
                BodyRead::Read(bytes) => Ok(bytes),
                BodyRead::ChunksGone => Err(BusError::BlobMissing(key.to_owned())),
            },
        }
    }

    /// One read of a body: its metadata, then its chunks.
    async fn read_body_once(&self, key: &str) -> Result<BodyRead, BusError> {
        use base64::Engine;
        use jetstream::stream::LastRawMessageErrorKind;
        let missing = || BusError::BlobMissing(key.to_owned());
        let meta_subject = format!(
            "$O.{BODY_BUCKET}.M.{}",
            base64::engine::general_purpose::URL_SAFE.encode(key)
        );
        let meta = match self
            .bodies_stream
            .get_last_raw_message_by_subject(&meta_subject)
            .await
        {
            Ok(meta) => meta,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Err(missing()),
            Err(e) => return Err(unavailable("cannot read body metadata", e)),
        };
        let info: jetstream::object_store::ObjectInfo = serde_json::from_slice(&meta.payload)
            .map_err(|e| unavailable("cannot decode body metadata", e))?;
        if info.deleted {
            return Err(missing());
        }
        let chunk_subject = format!("$O.{BODY_BUCKET}.C.{}", info.nuid);
        // The metadata's size is only a hint for the allocation: never trust it further.
        let mut bytes = Vec::with_capacity(info.size.min(64 * 1024 * 1024));
        let mut next_sequence = 1;
        for _ in 0..info.chunks {
            let chunk = match self
                .bodies_stream
                .get_first_raw_message_by_subject(&chunk_subject, next_sequence)
                .await
            {
                Ok(chunk) => chunk,
                // Retention or a newer version removed them under us.
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(BodyRead::ChunksGone)
                }
                Err(e) => return Err(unavailable("cannot read body", e)),
            };
            bytes.extend_from_slice(&chunk.payload);
            next_sequence = chunk.sequence + 1;
        }
        if bytes.len() != info.size {
            return Err(BusError::BlobCorrupt {
                key: key.to_owned(),
                expected: format!("{} bytes", info.size),
                found: format!("{} bytes", bytes.len()),
            });
        }
        Ok(BodyRead::Read(bytes))
    }
}

/// What one read of a body found.
enum BodyRead {
    Read(Vec<u8>),
    /// The metadata named chunks that are no longer there.
    ChunksGone,
}

fn stored_from_message(message: &jetstream::Message) -> Result<(StoredEvent, u64), BusError> {
    let info = message
        .info()
        .map_err(|e| unavailable("message without metadata", e))?;
    let mut headers = Vec::new();
    let mut id = String::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            for value in values {
                if name.eq_ignore_ascii_case(subjects::HEADER_MSG_ID) {
                    id = value.as_str().to_owned();
                } else {
                    headers.push((name.to_owned(), value.as_str().to_owned()));
                }
            }
        }
    }
    let published_at =
        DateTime::<Utc>::from_timestamp_nanos(info.published.unix_timestamp_nanos() as i64);
    Ok((
        StoredEvent {
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            id,
            headers,
            payload: message.payload.to_vec(),
            published_at,
        },
        info.pending,
    ))
}

/// A durable pull consumer on JetStream.
pub struct JetStreamConsumer {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// What this consumer reads.
    pub spec: ConsumerSpec,
}

impl JetStreamConsumer {
    /// See [`crate::Consumer::fetch`].
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.max(1))
            .expires(wait.max(Duration::from_millis(100)))
            .messages()
            .await
            .map_err(|e| unavailable("fetch failed", e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable("fetch failed", e))?;
            let (event, pending) = stored_from_message(&message)?;
            let attempt = message
                .info()
                .map(|i| i.delivered.max(1) as u32)
                .unwrap_or(1);
            out.push(Delivery {
                event,
                attempt,
                pending,
                handle: AckHandle::JetStream(message),
            });
        }
        Ok(out)
    }
}

pub(crate) async fn settle(message: &jetstream::Message, kind: AckKind) -> Result<(), BusError> {
    message
        .ack_with(kind)
        .await
        .map_err(|e| unavailable("ack failed", e))
}
