//! Fills an event log with synthetic `mail.scored` events for `ops/bench/replay.sh`.
//!
//! `cargo run --release --example replay_fill -- DATA_DIR|nats://HOST:PORT MESSAGES`
//!
//! Each message looks like what the live pipeline records: an RBL tag and a handful of
//! rule hits with evidence, 1 to 3 recipients (1.6 on average, as on a typical MX) at
//! the seeded levels, a score and each recipient's decision. Scores spread from -3 to
//! 25 so every disposition occurs.

use std::{path::PathBuf, sync::Arc};

use chrono::Utc;
use pampa_bus::{BusConfig, EventLog, OutgoingEvent};
use pampa_schemas::{
    decide, BlobRef, ClientInfo, Envelope, MailAnalysis, MailReceived, RecipientLevel, Tag,
};
use pampa_stages::score::seeded_levels;

/// Publishes in flight at once, so the embedded log can group its commits.
const IN_FLIGHT: usize = 256;

fn message(n: u64) -> MailAnalysis {
    let levels = seeded_levels();
    let copies = [1, 1, 2, 2][(n % 4) as usize] + usize::from(n % 10 == 9);
    let recipients: Vec<String> = (0..copies)
        .map(|r| format!("user{}@example.org", (n * 7 + r as u64) % 5000))
        .collect();
    let received = MailReceived {
        submitted_by: None,
        message_id: pampa_schemas::new_id(),
        client: ClientInfo {
            ip: format!("192.0.2.{}", n % 250),
            helo: "client.example.net".into(),
            tls: n.is_multiple_of(2),
        },
        mail_from: format!("sender{}@example.net", n % 977),
        recipients: recipients.clone(),
        blob: BlobRef {
            key: format!("bench-{n}"),
            size: 4096,
            sha256: "ab".repeat(32),
        },
        header_message_id: Some(format!("<{n}@example.net>")),
        received_by: "mx.example.org".into(),
        received_at: Utc::now(),
        levels: recipients
            .iter()
            .enumerate()
            .map(|(i, address)| RecipientLevel {
                address: address.clone(),
                level: levels[(n as usize + i) % 3].clone(),
            })
            .collect(),
    };
    let mut analysis = MailAnalysis::start(received);
    if n.is_multiple_of(5) {
        analysis.tags.push(Tag {
            name: "RBL_TEST".into(),
            evidence: "127.0.0.2 from rbl.example.org".into(),
            weight: Some(3.0),
        });
    }
    for rule in 0..(4 + n % 8) {
        analysis.tags.push(Tag::new(
            format!("RULE_{}", (n + rule) % 130),
            "matched \"free money now\" in the body",
        ));
    }
    let score = ((n * 37) % 280) as f64 / 10.0 - 3.0;
    analysis.score = Some(score);
    let tags = analysis.tags.clone();
    for recipient in &mut analysis.recipients {
        let level = recipient.level.clone().unwrap_or_else(|| levels[1].clone());
        recipient.decision = Some(decide(&tags, &recipient.tags, score, &level));
    }
    analysis.stages = vec!["rbl".into(), "whitelist".into(), "score".into()];
    analysis
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: replay_fill DATA_DIR|nats://HOST:PORT MESSAGES");
    };
    let count: u64 = count.parse()?;
    let mut config = BusConfig::default();
    let data_dir = if target.starts_with("nats://") {
        config.url = target.clone();
        PathBuf::from(".")
    } else {
        PathBuf::from(&target)
    };
    let log = Arc::new(EventLog::open(&config, &data_dir).await?);
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut decisions = 0u64;
    for n in 0..count {
        let analysis = message(n);
        decisions += analysis.recipients.len() as u64;
        let parent = analysis.received.message_id.clone();
        let mut event = Envelope::root(
            pampa_schemas::derive_id(&parent, "score"),
            "score",
            analysis,
        );
        event.correlation_id = parent;
        let outgoing = OutgoingEvent::from_envelope(&event)?;
        if tasks.len() >= IN_FLIGHT {
            if let Some(done) = tasks.join_next().await {
                done??;
            }
        }
        let log = log.clone();
        tasks.spawn(async move { log.publish(&outgoing).await.map(|_| ()) });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    eprintln!(
        "replay_fill: {count} messages, {decisions} decisions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{decisions}");
    Ok(())
}
