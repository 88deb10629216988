//! `pampa migrate-log --to nats://…`: the embedded log copied into NATS JetStream, so a
//! single node can move to a cluster without losing its history or redoing its work.
//!
//! Every event is copied in log order, stream by stream, with its id (so JetStream's
//! duplicate window drops a copy published twice) and headers; every `mail.received`
//! body is copied into the body bucket and checked against its claim check; and every
//! durable consumer of the embedded log gets a JetStream twin that starts at the first
//! event it had not acked, so the stages neither redo what they did nor skip what they
//! had not finished.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use chrono::DateTime;
use clap::Args;
use futures::TryStreamExt;
use pampa_bus::{
    jetstream::stream_for, BusConfig, BusError, ConsumerSpec, EventLog, OutgoingEvent, StoredEvent,
};
use pampa_schemas::{decode, subjects, Event, MailReceived};

use crate::config::Config;

/// `pampa migrate-log` options.
#[derive(Args)]
pub struct MigrateArgs {
    /// The NATS server or cluster to copy into (`nats://a:4222,nats://b:4222`). Its
    /// streams must be empty.
    #[arg(long, value_name = "URL")]
    to: String,
}

/// Events published to JetStream per batch (one round trip each).
const BATCH: usize = 256;

pub async fn migrate_log(config: &Config, args: &MigrateArgs) -> Result<()> {
    if config.bus.url != "embedded" {
        bail!(
            "migrate-log copies the embedded log of this configuration, but [bus] url is {}; \
             run it with the configuration the single node used (url = \"embedded\")",
            config.bus.url
        );
    }
    let source = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .context("cannot open the embedded log")?;
    let EventLog::Embedded(embedded) = &source else {
        bail!("the source is not the embedded log");
    };
    let target_config = BusConfig {
        url: args.to.clone(),
        ..config.bus.clone()
    };
    let target = EventLog::open(&target_config, &config.data_dir)
        .await
        .with_context(|| format!("cannot open JetStream at {}", args.to))?;
    let EventLog::JetStream(jetstream) = &target else {
        bail!("--to must name a NATS server (nats://…), not {}", args.to);
    };
    for (stream, _) in subjects::STREAMS {
        let held = jetstream.stream_messages(stream).await?;
        if held > 0 {
            bail!(
                "stream {stream} on {} already holds {held} events; migrate-log copies into \
                 empty streams only (a second copy would duplicate every event older than \
                 the duplicate window)",
                args.to
            );
        }
    }

    let positions = embedded.consumer_positions().await?;
    // JetStream cannot start a consumer with some events after its start already acked:
    // a consumer with deliveries in work would redo everything after the oldest one, as
    // first tries. So the stages must be idle first.
    let busy: Vec<String> = positions
        .iter()
        .filter(|p| p.pending > 0)
        .map(|p| format!("{} ({} from sequence {})", p.name, p.pending, p.resume_at))
        .collect();
    if !busy.is_empty() {
        bail!(
            "stages still have deliveries in work or waiting for a retry: {}. Start pampa \
             without SMTP traffic until `pampa audit` says nothing is in flight and \
             `pampa dead list` is what you expect, stop it, and run migrate-log again",
            busy.join(", ")
        );
    }
    let mut copied = 0u64;
    let mut bodies = 0u64;
    let mut gone = 0u64;
    // Per stream: embedded sequence -> JetStream sequence, for the consumers' starts.
    let mut starts: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for (stream, filter) in subjects::STREAMS {
        let wanted: Vec<u64> = positions
            .iter()
            .filter(|p| stream_for(&p.filter) == Some(stream))
            .map(|p| p.resume_at)
            .collect();
        let mut events = source.replay_stream(filter, DateTime::UNIX_EPOCH);
        let mut batch: Vec<StoredEvent> = Vec::with_capacity(BATCH);
        loop {
            let next = events.try_next().await?;
            let done = next.is_none();
            if let Some(event) = next {
                batch.push(event);
            }
            if batch.len() == BATCH || (done && !batch.is_empty()) {
                for event in &batch {
                    if event.subject == MailReceived::EVENT_TYPE {
                        match copy_body(&source, &target, event).await? {
                            true => bodies += 1,
                            false => gone += 1,
                        }
                    }
                }
                let outgoing: Vec<OutgoingEvent> = batch
                    .iter()
                    .map(|e| OutgoingEvent {
                        subject: e.subject.clone(),
                        id: e.id.clone(),
                        headers: e.headers.clone(),
                        payload: e.payload.clone(),
                    })
                    .collect();
                let acks = target
                    .publish_batch(&outgoing)
                    .await
                    .context("publishing to JetStream failed; nothing is lost, run it again on empty streams")?;
                let map = starts.entry(stream).or_default();
                for (event, ack) in batch.iter().zip(&acks) {
                    // The first copied event at or after each consumer's resume point.
                    for &at in &wanted {
                        if event.sequence >= at {
                            map.entry(at).or_insert(ack.sequence);
                        }
                    }
                }
                copied += batch.len() as u64;
                batch.clear();
            }
            if done {
                break;
            }
        }
    }

    for position in &positions {
        let Some(stream) = stream_for(&position.filter) else {
            continue;
        };
        // A consumer that had done everything starts after the last copied event.
        let start = match starts.get(stream).and_then(|m| m.get(&position.resume_at)) {
            Some(&seq) => seq,
            None => jetstream.last_sequence(stream).await? + 1,
        };
        let mut spec = ConsumerSpec::new(&position.name, &position.filter, &config.bus);
        // deliver waits longer for its stores than the stages for theirs.
        if [
            pampa_deliver::DELIVER_CONSUMER,
            pampa_deliver::RECOVER_CONSUMER,
        ]
        .contains(&position.name.as_str())
        {
            spec.max_deliver = config.deliver.max_deliver.max(1);
        }
        jetstream
            .create_consumer_at(&spec, start)
            .await
            .with_context(|| format!("cannot create consumer {}", position.name))?;
        println!(
            "consumer {:<10} {:<16} starts at {stream} sequence {start}",
            position.name, position.filter
        );
    }
    println!(
        "Copied {copied} events and {bodies} bodies from the embedded log in {} to {}.",
        config.data_dir.join("log").display(),
        args.to
    );
    if gone > 0 {
        println!(
            "{gone} bodies were already gone (retention, or unreadable): their events are \
             copied, and reading those bodies fails as it did before."
        );
    }
    println!("Now set [bus] url = \"{}\" and start pampa.", args.to);
    Ok(())
}

/// Copies the body of a `mail.received` event and checks it arrived as claimed; `false`
/// when the source no longer has a readable body (retention purged it, or it is corrupt):
/// the event is still worth copying.
async fn copy_body(source: &EventLog, target: &EventLog, event: &StoredEvent) -> Result<bool> {
    let received = decode::<MailReceived>(&event.payload)
        .with_context(|| format!("event {} is not a readable mail.received", event.id))?;
    let blob = &received.payload.blob;
    let bytes = match source.get_blob(blob).await {
        Ok(bytes) => bytes,
        Err(e @ (BusError::BlobMissing(_) | BusError::BlobCorrupt { .. })) => {
            tracing::warn!(event_id = %event.id, error = %e, "Body not copied.");
            return Ok(false);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("the body of {} cannot be read", event.id))
        }
    };
    let stored = target.put_blob(&blob.key, &bytes).await?;
    if stored.sha256 != blob.sha256 {
        bail!("the body of {} changed on the way", event.id);
    }
    Ok(true)
}
