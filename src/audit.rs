//! `pampa audit`: the event log checked against the mailboxes.
//!
//! Every accepted copy (one per message and recipient) must end in exactly one terminal
//! state: written to a folder (inbox, Spam, Quarantine), discarded, or held in a dead
//! letter; or still be on its way. The audit reads `mail.received`, `mail.delivered` and
//! the open dead letters, then looks for each written copy in its Maildir folder: a copy
//! the log says was written but that is not there is *missing*; two files of one copy in
//! one folder are *duplicated*. Both must be zero; the command exits non-zero otherwise.
//!
//! Maildir file names carry a deterministic id per (message, recipient), so the copies of
//! a folder are found by one directory listing, whether the user's mail client has moved
//! them from `new/` to `cur/` or not.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::Args;
use futures::StreamExt;
use pampa_bus::EventLog;
use pampa_schemas::{decode, decode_head, derive_id, DeliveryOutcome, MailDelivered, MailReceived};
use serde::Serialize;

use crate::{admin::open_dead_letters, config::Config, table};

#[derive(Args)]
pub struct AuditArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where one copy ended, by the log's last word on it.
#[derive(Clone)]
enum Fate {
    Written { folder: String, location: PathBuf },
    Remote { folder: String },
    Discarded,
    Failed,
}

impl Fate {
    /// Which of two stores' results counts for a copy: the higher.
    fn rank(&self) -> u8 {
        match self {
            Fate::Written { .. } => 3,
            Fate::Remote { .. } | Fate::Discarded => 2,
            Fate::Failed => 1,
        }
    }
}

/// The counts `pampa audit` prints.
#[derive(Default, Serialize)]
struct AuditReport {
    messages: u64,
    copies: u64,
    inbox: u64,
    spam: u64,
    quarantine: u64,
    other_folders: u64,
    discarded: u64,
    failed: u64,
    dead_lettered: u64,
    in_flight: u64,
    missing: u64,
    duplicated: u64,
    /// Up to ten (message, recipient) pairs per problem, for `pampa trace`.
    missing_samples: Vec<String>,
    duplicated_samples: Vec<String>,
}

/// The Maildir name token of one copy, as deliver writes it (`…M<token>.host`).
fn copy_token(message_id: &str, recipient: &str) -> String {
    format!("M{}", derive_id(message_id, recipient).replace('-', ""))
}

/// The folder directory (the one holding `new/` and `cur/`) of a recorded location.
fn folder_of(location: &Path) -> Option<PathBuf> {
    location.parent()?.parent().map(Path::to_path_buf)
}

/// How many files of each copy token a folder holds, in `new/` and `cur/`.
fn index_folder(folder: &Path) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // `{secs}.M{token}.{host}[:2,flags]`
            if let Some(token) = name.split('.').nth(1).filter(|t| t.starts_with('M')) {
                *counts.entry(token.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

pub async fn audit(config: &Config, args: &AuditArgs) -> Result<()> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let since = chrono::DateTime::UNIX_EPOCH;

    // Every accepted copy, by (message, recipient).
    let mut copies: Vec<(String, String)> = Vec::new();
    let mut messages = HashSet::new();
    let mut stream = log.replay_stream("mail.received", since);
    while let Some(event) = stream.next().await {
        let event = event?;
        let received = decode::<MailReceived>(&event.payload)
            .with_context(|| format!("cannot decode event {}", event.id))?
            .payload;
        if messages.insert(received.message_id.clone()) {
            for recipient in received.recipients {
                copies.push((received.message_id.clone(), recipient));
            }
        }
    }

    // The last word of deliver (or of a recovery) on each copy.
    let mut fates: HashMap<(String, String), Fate> = HashMap::new();
    let mut stream = log.replay_stream("mail.delivered", since);
    while let Some(event) = stream.next().await {
        let event = event?;
        let delivered = decode::<MailDelivered>(&event.payload)
            .with_context(|| format!("cannot decode event {}", event.id))?
            .payload;
        for d in delivered.deliveries {
            let fate = match d.outcome {
                // A copy an LMTP server took is in that server's store, where this
                // audit cannot look: it counts in its folder, unchecked.
                DeliveryOutcome::Delivered | DeliveryOutcome::AlreadyDelivered
                    if d.store.starts_with("lmtp") =>
                {
                    Fate::Remote { folder: d.folder }
                }
                DeliveryOutcome::Delivered | DeliveryOutcome::AlreadyDelivered => Fate::Written {
                    folder: d.folder,
                    location: PathBuf::from(d.location),
                },
                DeliveryOutcome::Discarded { .. } => Fate::Discarded,
                DeliveryOutcome::Failed { .. } => Fate::Failed,
                // A try's record; the copy's fate is in a later event.
                DeliveryOutcome::Deferred { .. } => continue,
            };
            // With two stores (a migration), the best fate stands: a Maildir copy (which
            // is checked on disk) over one an LMTP server took, over a refusal. Among
            // equals the later event wins (a recovery moves a copy to the inbox).
            if fates
                .get(&(delivered.message_id.clone(), d.recipient.clone()))
                .is_some_and(|old| old.rank() > fate.rank())
            {
                continue;
            }
            fates.insert((delivered.message_id.clone(), d.recipient), fate);
        }
    }

    // Messages held in open dead letters (by the correlation id of the input they hold).
    let mut dead: HashSet<String> = HashSet::new();
    for letter in open_dead_letters(&log).await? {
        if let Ok(head) = decode_head(&letter.payload) {
            dead.insert(head.correlation_id);
        }
    }

    let mut report = AuditReport {
        messages: messages.len() as u64,
        copies: copies.len() as u64,
        ..AuditReport::default()
    };
    let mut folders: HashMap<PathBuf, HashMap<String, u32>> = HashMap::new();
    for (message_id, recipient) in &copies {
        let sample = || format!("{message_id} {recipient}");
        match fates.get(&(message_id.clone(), recipient.clone())) {
            Some(Fate::Written { folder, location }) => {
                match folder.as_str() {
                    "INBOX" => report.inbox += 1,
                    "Spam" => report.spam += 1,
                    "Quarantine" => report.quarantine += 1,
                    _ => report.other_folders += 1,
                }
                let Some(dir) = folder_of(location) else {
                    report.missing += 1;
                    continue;
                };
                let index = folders
                    .entry(dir.clone())
                    .or_insert_with(|| index_folder(&dir));
                match index
                    .get(&copy_token(message_id, recipient))
                    .copied()
                    .unwrap_or(0)
                {
                    0 => {
                        report.missing += 1;
                        if report.missing_samples.len() < 10 {
                            report.missing_samples.push(sample());
                        }
                    }
                    1 => {}
                    _ => {
                        report.duplicated += 1;
                        if report.duplicated_samples.len() < 10 {
                            report.duplicated_samples.push(sample());
                        }
                    }
                }
            }
            Some(Fate::Remote { folder }) => match folder.as_str() {
                "INBOX" => report.inbox += 1,
                "Spam" => report.spam += 1,
                "Quarantine" => report.quarantine += 1,
                _ => report.other_folders += 1,
            },
            Some(Fate::Discarded) => report.discarded += 1,
            Some(Fate::Failed) => report.failed += 1,
            None if dead.contains(message_id) => report.dead_lettered += 1,
            None => report.in_flight += 1,
        }
    }

    let clean = report.missing == 0 && report.duplicated == 0;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let rows: Vec<Vec<String>> = [
            ("messages received", report.messages),
            ("copies (message × recipient)", report.copies),
            ("  in the inbox", report.inbox),
            ("  in Spam", report.spam),
            ("  in Quarantine", report.quarantine),
            ("  in other folders", report.other_folders),
            ("  discarded (kept in the log)", report.discarded),
            ("  refused by the store", report.failed),
            ("  in dead letters", report.dead_lettered),
            ("  still on their way", report.in_flight),
            ("missing from their folder", report.missing),
            ("duplicated in their folder", report.duplicated),
        ]
        .into_iter()
        .map(|(what, n)| vec![what.to_owned(), n.to_string()])
        .collect();
        table::print(&["", "COUNT"], &rows);
        for sample in report.missing_samples.iter() {
            println!("missing: {sample}");
        }
        for sample in report.duplicated_samples.iter() {
            println!("duplicated: {sample}");
        }
    }
    if !clean {
        anyhow::bail!(
            "{} copies missing and {} duplicated",
            report.missing,
            report.duplicated
        );
    }
    Ok(())
}
