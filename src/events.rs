//! `pampa events SUBJECT [--since AGE] [--json]`: the raw events of one subject, decoded,
//! for operators and scripts (what `nats stream view` shows, but readable, and the same on
//! the embedded log). A `dns.query` or `access.auth` event holds a batch of records: it
//! is shown as one entry per query or decision, each with its event's envelope.

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;
use futures::StreamExt;
use pampa_bus::{EventLog, StoredEvent};
use pampa_schemas::{decode_auths, decode_queries, AccessAuths, DnsQueries, Envelope, Event};
use serde_json::{json, Value};

use crate::{config::Config, replay::parse_time, table};

#[derive(Args)]
pub struct EventsArgs {
    /// A subject or a pattern: `access.acct`, `mail.>`, `dns.*`.
    subject: String,
    /// Only events stored since (`1h`, `7d`, or an RFC 3339 time). Default: everything
    /// the log still holds.
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// At most this many events (the oldest first).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Print JSON (an array, oldest first) instead of a table.
    #[arg(long)]
    json: bool,
}

/// An event as JSON: one value, or, for a batch event (`dns.query`, `access.auth`), one
/// per record, each with the batch's envelope.
fn entries(event: &StoredEvent) -> Result<Vec<Value>> {
    let context = || format!("cannot decode event {}", event.id);
    if event.subject == DnsQueries::EVENT_TYPE {
        let batch = decode_queries(&event.payload).with_context(context)?;
        return per_record(batch, |queries| queries.iter().collect());
    }
    if event.subject == AccessAuths::EVENT_TYPE {
        let batch = decode_auths(&event.payload).with_context(context)?;
        return per_record(batch, |auths| auths.decisions);
    }
    // Named encoding writes maps with field names, so any event reads as JSON.
    Ok(vec![
        rmp_serde::from_slice(&event.payload).with_context(context)?
    ])
}

/// One JSON value per record of a batch event: the envelope, with the record as payload.
fn per_record<B, R: serde::Serialize>(
    batch: Envelope<B>,
    records: impl FnOnce(B) -> Vec<R>,
) -> Result<Vec<Value>> {
    let (head, payload) = batch.split();
    let mut head = serde_json::to_value(head)?;
    records(payload)
        .into_iter()
        .map(|record| {
            head["payload"] = serde_json::to_value(record)?;
            Ok(head.clone())
        })
        .collect()
}

/// Prints the events of a subject.
pub async fn events(config: &Config, args: &EventsArgs) -> Result<()> {
    let since = match &args.since {
        Some(value) => parse_time(value, Utc::now(), "--since")?,
        None => chrono::DateTime::UNIX_EPOCH,
    };
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let mut stream = log.replay_stream(&args.subject, since);
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event?;
        for mut value in entries(&event)? {
            if let Some(map) = value.as_object_mut() {
                map.insert("subject".into(), json!(event.subject));
                map.insert("published_at".into(), json!(event.published_at));
            }
            out.push(value);
        }
        if out.len() >= args.limit {
            out.truncate(args.limit);
            break;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if out.is_empty() {
        println!("no {} events", args.subject);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|v| {
            vec![
                v["published_at"].as_str().unwrap_or("").to_owned(),
                v["subject"].as_str().unwrap_or("").to_owned(),
                v["source"].as_str().unwrap_or("").to_owned(),
                v["id"].as_str().unwrap_or("").to_owned(),
                v["payload"].to_string(),
            ]
        })
        .collect();
    table::print(&["TIME", "SUBJECT", "SOURCE", "ID", "PAYLOAD"], &rows);
    Ok(())
}
