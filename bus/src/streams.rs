//! `pampa streams check`: the JetStream layout (streams, the body bucket, the stages'
//! durable consumers) compared with what the configuration wants, and on request made so.
//!
//! Every process already creates what it needs when it connects, but an operator
//! changing `[bus] max_age` or `replicas` on a cluster wants to see the difference
//! before a rolling restart applies it piecemeal, and a consumer someone edited by hand
//! (a different filter, a finite `max_deliver`) would silently change how a stage reads.

use std::fmt;

use async_nats::jetstream::{
    self,
    context::{ConsumerInfoErrorKind, GetStreamErrorKind},
    ErrorCode,
};

use crate::{
    jetstream::{
        body_bucket_config, body_bucket_stream, connect_context, consumer_config, stream_configs,
        stream_for,
    },
    BusConfig, BusError, ConsumerSpec,
};

/// What a check found for one stream, bucket or consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// As configured.
    Ok,
    /// Not on the server.
    Missing,
    /// On the server, set differently: one line per setting, `name: have X, want Y`.
    Differs(Vec<String>),
    /// Was missing and is now created (with `apply`).
    Created,
    /// Differed and is now updated (with `apply`).
    Updated(Vec<String>),
    /// `apply` tried and the server refused.
    Failed(String),
}

impl State {
    /// Whether the object is as configured now (after `apply`, if it ran).
    pub fn is_settled(&self) -> bool {
        matches!(self, State::Ok | State::Created | State::Updated(_))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Ok => f.write_str("ok"),
            State::Missing => f.write_str("missing"),
            State::Differs(what) => write!(f, "differs: {}", what.join("; ")),
            State::Created => f.write_str("created"),
            State::Updated(what) => write!(f, "updated: {}", what.join("; ")),
            State::Failed(why) => write!(f, "FAILED: {why}"),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `stream`, `bucket` or `consumer`.
    pub kind: &'static str,
    /// The stream's or bucket's name, or `STREAM/consumer`.
    pub name: String,
    /// What was found, and done.
    pub state: State,
}

/// Compares the server's streams, body bucket and the durable consumers of `consumers`
/// with `config`; with `apply`, creates what is missing and updates what differs.
pub async fn check(
    config: &BusConfig,
    consumers: &[ConsumerSpec],
    apply: bool,
) -> Result<Vec<Finding>, BusError> {
    let (_client, context) = connect_context(config).await?;
    let mut findings = Vec::new();

    for want in stream_configs(config) {
        let name = want.name.clone();
        let have = stream_config(&context, &name).await?;
        let state = match have {
            None if apply => match context.create_stream(want).await {
                Ok(_) => State::Created,
                Err(e) => State::Failed(e.to_string()),
            },
            None => State::Missing,
            Some(have) => settle_stream(&context, &have, &want, apply).await,
        };
        findings.push(Finding {
            kind: "stream",
            name,
            state,
        });
    }

    let bucket = body_bucket_config(config);
    let bucket_stream = body_bucket_stream();
    let state = match stream_config(&context, &bucket_stream).await? {
        None if apply => match context.create_object_store(bucket.clone()).await {
            Ok(_) => State::Created,
            Err(e) => State::Failed(e.to_string()),
        },
        None => State::Missing,
        Some(have) => {
            let mut want = have.clone();
            want.max_age = bucket.max_age;
            want.num_replicas = bucket.num_replicas;
            want.storage = bucket.storage;
            settle_stream(&context, &have, &want, apply).await
        }
    };
    findings.push(Finding {
        kind: "bucket",
        name: bucket.bucket.clone(),
        state,
    });

    for spec in consumers {
        let Some(stream_name) = stream_for(&spec.filter) else {
            return Err(BusError::Config(format!(
                "no stream holds subject {} (consumer {})",
                spec.filter, spec.name
            )));
        };
        let name = format!("{stream_name}/{}", spec.name);
        let want = consumer_config(spec);
        // A consumer cannot be checked on a stream that is not there (yet).
        let Ok(stream) = context.get_stream(stream_name).await else {
            findings.push(Finding {
                kind: "consumer",
                name,
                state: State::Missing,
            });
            continue;
        };
        let state = match stream.consumer_info(&spec.name).await {
            Ok(info) => {
                let diff = consumer_diff(&info.config, &want);
                // Where it started is its own (migrate-log's start), and unchangeable.
                let mut want = want.clone();
                want.deliver_policy = info.config.deliver_policy;
                settle(diff, apply, || async {
                    stream
                        .create_consumer(want.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await
            }
            Err(e) if consumer_missing(e.kind()) => {
                if apply {
                    match stream.create_consumer(want).await {
                        Ok(_) => State::Created,
                        Err(e) => State::Failed(e.to_string()),
                    }
                } else {
                    State::Missing
                }
            }
            Err(e) => {
                return Err(BusError::Unavailable(format!(
                    "cannot read consumer {name}: {e}"
                )))
            }
        };
        findings.push(Finding {
            kind: "consumer",
            name,
            state,
        });
    }
    Ok(findings)
}

/// `Ok` when nothing differs; else `Differs`, or with `apply` the result of `update`.
async fn settle<F, Fut>(diff: Vec<String>, apply: bool, update: F) -> State
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if diff.is_empty() {
        State::Ok
    } else if !apply {
        State::Differs(diff)
    } else {
        match update().await {
            Ok(()) => State::Updated(diff),
            Err(why) => State::Failed(why),
        }
    }
}

/// A stream that exists: `Ok`, or what differs, updated with `apply`.
async fn settle_stream(
    context: &jetstream::Context,
    have: &jetstream::stream::Config,
    want: &jetstream::stream::Config,
    apply: bool,
) -> State {
    settle(stream_diff(have, want), apply, || async {
        context
            .update_stream(want)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// The stream's configuration on the server, `None` when there is no such stream.
async fn stream_config(
    context: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Config>, BusError> {
    match context.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(BusError::Unavailable(format!(
                "cannot read stream {name}: {e}"
            ))),
        },
    }
}

fn consumer_missing(kind: ConsumerInfoErrorKind) -> bool {
    match kind {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(e) => e.error_code() == ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

/// Pushes `name: have X, want Y` when the two differ.
fn compare<T: PartialEq + fmt::Debug>(out: &mut Vec<String>, name: &str, have: &T, want: &T) {
    if have != want {
        out.push(format!("{name}: have {have:?}, want {want:?}"));
    }
}

/// The settings pampa sets on a stream that differ on the server.
fn stream_diff(have: &jetstream::stream::Config, want: &jetstream::stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    compare(&mut out, "subjects", &have.subjects, &want.subjects);
    compare(&mut out, "retention", &have.retention, &want.retention);
    compare(&mut out, "max_age", &have.max_age, &want.max_age);
    compare(&mut out, "storage", &have.storage, &want.storage);
    compare(&mut out, "replicas", &have.num_replicas, &want.num_replicas);
    // The server fills in a default window for streams created without one.
    if !want.duplicate_window.is_zero() {
        compare(
            &mut out,
            "duplicate_window",
            &have.duplicate_window,
            &want.duplicate_window,
        );
    }
    out
}

/// The settings pampa sets on a stage's consumer that differ on the server.
fn consumer_diff(
    have: &jetstream::consumer::Config,
    want: &jetstream::consumer::pull::Config,
) -> Vec<String> {
    let mut out = Vec::new();
    compare(
        &mut out,
        "filter_subject",
        &have.filter_subject,
        &want.filter_subject,
    );
    compare(&mut out, "ack_policy", &have.ack_policy, &want.ack_policy);
    compare(&mut out, "ack_wait", &have.ack_wait, &want.ack_wait);
    compare(
        &mut out,
        "max_deliver",
        &have.max_deliver,
        &want.max_deliver,
    );
    // Not the deliver policy: it only says where the consumer started (all, or after
    // what `pampa migrate-log` found done), and the server cannot change it.
    out
}
