//! `pampa trace MESSAGE-ID`: one message's whole history, read back from the event log.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use pampa_bus::{EventLog, StoredEvent};
use pampa_schemas::{
    decode, subjects, DeliveryOutcome, MailAnalysis, MailDelivered, MailFeedback, MailHeld,
    MailReceived, RelayAttempt, RelayFinal, SUBMITTED_EVENT_TYPE,
};
use serde_json::{json, Value};

use crate::{config::Config, table};

/// Where to start reading: message ids are UUIDv7, which carry their creation time, so
/// the log is read from a minute before it instead of from the beginning.
pub(crate) fn start_of(message_id: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let id = uuid::Uuid::parse_str(message_id).with_context(|| {
        format!("{message_id:?} is not a pampa message id (the id in \"250 ... queued as ID\")")
    })?;
    let Some(ts) = id.get_timestamp() else {
        bail!("{message_id} is not a time-ordered (v7) id, so it is not a pampa message id");
    };
    let (secs, nanos) = ts.to_unix();
    let at = chrono::DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default();
    Ok(at - chrono::Duration::minutes(1))
}

/// A tag as the table shows it: its name, and its evidence if it has any.
fn tag_text(tag: &pampa_schemas::Tag) -> String {
    if tag.evidence.is_empty() {
        tag.name.clone()
    } else {
        format!("{} ({})", tag.name, tag.evidence)
    }
}

/// One event as JSON: its envelope fields and its decoded payload. `tags_before` is how
/// many message tags the previous analysis of this message had: each stage's output
/// carries its input's tags first, so the ones past that are the stage's own findings.
fn describe(event: &StoredEvent, tags_before: &mut usize) -> Result<(Value, String)> {
    let bytes = &event.payload;
    let head = pampa_schemas::decode_head(bytes)?;
    let (payload, details) = match head.event_type.as_str() {
        "mail.received" | SUBMITTED_EVENT_TYPE => {
            let p = decode::<MailReceived>(bytes)?.payload;
            let details = format!(
                "from <{}> to {} size {} client {} helo {}{}{}",
                p.mail_from,
                p.recipients.join(","),
                p.blob.size,
                p.client.ip,
                p.client.helo,
                if p.client.tls { " tls" } else { "" },
                p.submitted_by
                    .as_deref()
                    .map(|user| format!(" user {user}"))
                    .unwrap_or_default()
            );
            (serde_json::to_value(&p)?, details)
        }
        "mail.held" => {
            let p = decode::<MailHeld>(bytes)?.payload;
            let details = format!(
                "held, not sent: {}{}",
                p.reason,
                if p.flagged_now {
                    format!("; {} flagged", p.submitted_by)
                } else {
                    String::new()
                }
            );
            (serde_json::to_value(&p)?, details)
        }
        "mail.relay.attempt" => {
            let p = decode::<RelayAttempt>(bytes)?.payload;
            let results: Vec<String> = p
                .recipients
                .iter()
                .map(|r| format!("{}: {} ({})", r.recipient, r.result.as_str(), r.reply))
                .collect();
            let details = format!(
                "attempt {} to {} via {}{}: {}",
                p.attempt,
                p.domain,
                p.mx.as_deref().unwrap_or("no MX reached"),
                if p.tls { " tls" } else { "" },
                results.join("; ")
            );
            (serde_json::to_value(&p)?, details)
        }
        "mail.relay.final" => {
            let p = decode::<RelayFinal>(bytes)?.payload;
            let details = format!(
                "{}: {} after {} attempt(s) ({}){}",
                p.recipient,
                p.outcome.as_str(),
                p.attempts,
                p.reply,
                if p.dsn_sent { "; DSN sent" } else { "" }
            );
            (serde_json::to_value(&p)?, details)
        }
        "mail.feedback" => {
            let p = decode::<MailFeedback>(bytes)?.payload;
            let details = format!("{} says {} ({})", p.user, p.verdict.as_str(), p.origin);
            (serde_json::to_value(&p)?, details)
        }
        "mail.delivered" => {
            let p = decode::<MailDelivered>(bytes)?.payload;
            let details = p
                .deliveries
                .iter()
                .map(|d| match &d.outcome {
                    DeliveryOutcome::Delivered => {
                        format!("{}: delivered to {} at {}", d.recipient, d.folder, d.store)
                    }
                    DeliveryOutcome::AlreadyDelivered => {
                        format!("{}: already in {} at {}", d.recipient, d.folder, d.store)
                    }
                    DeliveryOutcome::Discarded { reason } => {
                        format!("{}: discarded ({reason})", d.recipient)
                    }
                    DeliveryOutcome::Failed { reason } => {
                        format!("{} at {}: failed ({reason})", d.recipient, d.store)
                    }
                    DeliveryOutcome::Deferred { reason } => {
                        format!("{} at {}: deferred ({reason})", d.recipient, d.store)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            (serde_json::to_value(&p)?, details)
        }
        _ => {
            let p = decode::<MailAnalysis>(bytes)?.payload;
            let mut parts: Vec<String> = Vec::new();
            let start = (*tags_before).min(p.tags.len());
            let found: Vec<String> = p.tags[start..].iter().map(tag_text).collect();
            *tags_before = p.tags.len();
            if found.is_empty() {
                parts.push("found nothing".to_owned());
            } else {
                parts.push(format!("found {}", found.join(", ")));
            }
            if let Some(score) = p.score {
                parts.push(format!("score {score:.1}"));
            }
            for r in &p.recipients {
                let tags: Vec<&str> = r.tags.iter().map(|t| t.name.as_str()).collect();
                let mut part = r.address.clone();
                if !tags.is_empty() {
                    part.push_str(&format!(" [{}]", tags.join(",")));
                }
                if let Some(d) = &r.decision {
                    part.push_str(&format!(" -> {} ({})", d.disposition.as_str(), d.reason));
                }
                parts.push(part);
            }
            // Drop the copy of mail.received each analysis carries; it is shown once.
            let mut value = serde_json::to_value(&p)?;
            if let Some(map) = value.as_object_mut() {
                map.remove("received");
                map.insert("new_tags".into(), serde_json::to_value(&p.tags[start..])?);
            }
            (value, parts.join("; "))
        }
    };
    let value = json!({
        "event_type": head.event_type,
        "id": head.id,
        "source": head.source,
        "occurred_at": head.occurred_at,
        "payload": payload,
    });
    Ok((value, details))
}

/// Finds pampa's id of the message whose `Message-ID:` header is `header` (with or
/// without angle brackets), reading `mail.received` events still retained.
async fn find_by_header(log: &EventLog, header: &str) -> Result<String> {
    let wanted = header.trim().trim_start_matches('<').trim_end_matches('>');
    let mut found: Vec<String> = Vec::new();
    for subject in ["mail.received", SUBMITTED_EVENT_TYPE] {
        let mut stream = log.replay_stream(subject, chrono::DateTime::UNIX_EPOCH);
        while let Some(event) = stream.next().await {
            let event = event?;
            let Ok(received) = decode::<MailReceived>(&event.payload) else {
                continue;
            };
            let matches = received
                .payload
                .header_message_id
                .as_deref()
                .is_some_and(|h| h.trim().trim_start_matches('<').trim_end_matches('>') == wanted);
            if matches && !found.contains(&received.payload.message_id) {
                found.push(received.payload.message_id);
            }
        }
    }
    match found.len() {
        0 => bail!("no retained message has the Message-ID {header:?} (and it is not a pampa id)"),
        1 => Ok(found.remove(0)),
        _ => bail!(
            "{} messages have the Message-ID {header:?}; trace one of them by pampa's id: {}",
            found.len(),
            found.join(", ")
        ),
    }
}

/// pampa's id of the message `id` names: pampa's id itself (from the 250 reply), or the
/// message's `Message-ID:` header, looked up in the retained `mail.received` events.
pub(crate) async fn resolve(log: &EventLog, id: &str) -> Result<String> {
    match start_of(id) {
        Ok(_) => Ok(id.to_owned()),
        Err(_) => find_by_header(log, id).await,
    }
}

/// Every retained event of one message, in log order.
pub(crate) async fn history(log: &EventLog, message_id: &str) -> Result<Vec<StoredEvent>> {
    let since = start_of(message_id)?;
    let mut events = Vec::new();
    let mut stream = log.replay_stream("mail.>", since);
    while let Some(event) = stream.next().await {
        let event = event?;
        if event.header(subjects::HEADER_CORRELATION_ID) == Some(message_id) {
            events.push(event);
        }
    }
    if events.is_empty() {
        bail!("no events for message {message_id} (unknown id, or removed by retention)");
    }
    Ok(events)
}

/// Prints every event of one message, in log order. `id` is pampa's id (from the 250
/// reply) or the message's `Message-ID:` header.
pub async fn trace(config: &Config, id: &str, json: bool) -> Result<()> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let message_id = resolve(&log, id).await?;
    let message_id = message_id.as_str();
    let events = history(&log, message_id).await?;
    let mut values = Vec::new();
    let mut rows = Vec::new();
    let mut tags_before = 0;
    let first = events.first().map(|e| e.published_at).unwrap_or_default();
    for event in &events {
        let (mut value, details) = describe(event, &mut tags_before)
            .with_context(|| format!("cannot decode event {}", event.id))?;
        // Time since the message was received: each stage's share of the latency.
        let elapsed_ms = (event.published_at - first).num_milliseconds();
        if let Some(map) = value.as_object_mut() {
            map.insert("published_at".into(), json!(event.published_at));
            map.insert("elapsed_ms".into(), json!(elapsed_ms));
        }
        rows.push(vec![
            event
                .published_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            format!("+{elapsed_ms} ms"),
            event.subject.clone(),
            value["source"].as_str().unwrap_or("").to_owned(),
            details,
        ]);
        values.push(value);
    }
    if json {
        let report = json!({ "message_id": message_id, "events": values });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        table::print(&["TIME", "AFTER", "EVENT", "SOURCE", "DETAILS"], &rows);
    }
    Ok(())
}
