//! `pampa train --from-feedback`: the users' verdicts in the log, as training data.
//!
//! Like SpamAssassin's `bayes_seen`, a ledger beside the model (`MODEL.learned`) records
//! which message was learned as what, so running this again does not count a message
//! twice, and a verdict that changed (ham after spam) is unlearned before it is learned
//! the other way.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pampa_bus::{BusError, EventLog};
use pampa_schemas::{decode, BlobRef, MailReceived, Verdict};
use pampa_stages::classifier::Classifier;

use crate::{config::Config, replay::parse_time, trace::start_of};

/// What was learned from which message.
struct Ledger {
    path: PathBuf,
    learned: BTreeMap<String, Verdict>,
}

impl Ledger {
    fn path_for(model: &Path) -> PathBuf {
        let mut name = model.as_os_str().to_owned();
        name.push(".learned");
        PathBuf::from(name)
    }

    /// Reads `message_id spam|ham` lines; a missing file is an empty ledger.
    fn load(model: &Path) -> Result<Ledger> {
        let path = Self::path_for(model);
        let mut learned = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (index, line) in text.lines().enumerate() {
                    let mut words = line.split_whitespace();
                    let verdict = match (words.next(), words.next()) {
                        (Some(id), Some("spam")) => (id, Verdict::Spam),
                        (Some(id), Some("ham")) => (id, Verdict::Ham),
                        (None, _) => continue,
                        _ => anyhow::bail!(
                            "{}:{}: expected `message_id spam|ham`",
                            path.display(),
                            index + 1
                        ),
                    };
                    learned.insert(verdict.0.to_owned(), verdict.1);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        Ok(Ledger { path, learned })
    }

    /// Written after the model, through a temporary file, so a crash leaves the old one.
    fn save(&self) -> Result<()> {
        let mut text = String::new();
        for (id, verdict) in &self.learned {
            text.push_str(id);
            text.push(' ');
            text.push_str(verdict.as_str());
            text.push('\n');
        }
        let tmp = self.path.with_extension("learned.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// What a feedback run did.
#[derive(Default)]
struct Tally {
    verdicts: usize,
    disagreements: usize,
    spam: usize,
    ham: usize,
    relearned: usize,
    already: usize,
    body_gone: usize,
}

/// Trains `model` (which will be saved at `model_path`) on the verdicts since `since`.
pub async fn train(
    config: &Config,
    since: Option<&str>,
    model: &mut Classifier,
    model_path: &Path,
) -> Result<()> {
    let since = match since {
        Some(value) => parse_time(value, Utc::now(), "--since")?,
        None => DateTime::UNIX_EPOCH,
    };
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let mut tally = Tally::default();

    // The latest verdict per message wins; recipients who disagree are counted.
    let mut verdicts: HashMap<String, Verdict> = HashMap::new();
    let mut disagreed: HashSet<String> = HashSet::new();
    let mut stream = crate::feedback::verdicts(&log, since);
    while let Some(feedback) = stream.next().await {
        let feedback = feedback?;
        tally.verdicts += 1;
        if let Some(old) = verdicts.insert(feedback.message_id.clone(), feedback.verdict) {
            if old != feedback.verdict {
                disagreed.insert(feedback.message_id);
            }
        }
    }
    tally.disagreements = disagreed.len();

    let mut ledger = Ledger::load(model_path)?;
    let todo: HashMap<&str, Verdict> = verdicts
        .iter()
        .filter(|(id, verdict)| ledger.learned.get(id.as_str()) != Some(verdict))
        .map(|(id, verdict)| (id.as_str(), *verdict))
        .collect();
    tally.already = verdicts.len() - todo.len();

    // Message ids are time-ordered, so the bodies are found from the oldest one on.
    let first = todo.keys().filter_map(|id| start_of(id).ok()).min();
    let mut blobs: HashMap<String, BlobRef> = HashMap::new();
    if let Some(first) = first {
        let mut stream = log.replay_stream("mail.received", first);
        while let Some(event) = stream.next().await {
            let event = event?;
            let Ok(received) = decode::<MailReceived>(&event.payload) else {
                continue;
            };
            let received = received.payload;
            if todo.contains_key(received.message_id.as_str()) {
                blobs.insert(received.message_id, received.blob);
            }
        }
    }

    let mut ids: Vec<&str> = todo.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let verdict = todo[id];
        let Some(blob) = blobs.get(id) else {
            tally.body_gone += 1;
            continue;
        };
        let raw = match log.get_blob(blob).await {
            Ok(raw) => raw,
            Err(BusError::BlobMissing(_)) => {
                tally.body_gone += 1;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read the body of {id}")),
        };
        if let Some(before) = ledger.learned.get(id) {
            model.forget(&raw, *before == Verdict::Spam);
            tally.relearned += 1;
        }
        model.train(&raw, verdict == Verdict::Spam);
        match verdict {
            Verdict::Spam => tally.spam += 1,
            Verdict::Ham => tally.ham += 1,
        }
        ledger.learned.insert(id.to_owned(), verdict);
    }

    model
        .save(model_path)
        .with_context(|| format!("cannot write {}", model_path.display()))?;
    ledger.save()?;
    println!(
        "From {} verdicts on {} messages: learned {} spam and {} ham ({} of them \
         relearned after the verdict changed); {} were learned before; {} had bodies \
         that retention removed.",
        tally.verdicts,
        verdicts.len(),
        tally.spam,
        tally.ham,
        tally.relearned,
        tally.already,
        tally.body_gone
    );
    if tally.disagreements > 0 {
        println!(
            "{} messages had recipients who disagreed; the latest verdict counted.",
            tally.disagreements
        );
    }
    Ok(())
}
