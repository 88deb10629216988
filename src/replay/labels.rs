//! Replay's labels: which messages were really spam, from a CSV file or from the users'
//! own verdicts (`mail.feedback` events).

use std::{collections::HashMap, path::Path};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pampa_bus::EventLog;
use pampa_schemas::Verdict;

/// What `--labels` names, the word `feedback` or a file.
pub const FROM_FEEDBACK: &str = "feedback";

/// Ham or spam, per message or per recipient.
#[derive(Default)]
pub struct Labels {
    /// `message_id → is spam`, from a file (or a recipient's verdict, for the plot).
    messages: HashMap<String, bool>,
    /// `(message_id, recipient) → is spam`, from the recipients' verdicts.
    recipients: HashMap<(String, String), bool>,
}

impl Labels {
    /// Reads `message_id,ham|spam` lines (header optional). A `Message-ID` header works
    /// as the id too, with or without angle brackets.
    pub fn from_csv(path: &Path) -> Result<Labels> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_path(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut messages = HashMap::new();
        for (index, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("bad CSV in {}", path.display()))?;
            let line = index + 1;
            let (Some(id), Some(label)) = (record.get(0), record.get(1)) else {
                bail!("{}:{line}: expected message_id,ham|spam", path.display());
            };
            let is_spam = match label.to_ascii_lowercase().as_str() {
                "spam" => true,
                "ham" => false,
                // The first line may be a header such as `message_id,label`.
                _ if index == 0 => continue,
                other => bail!(
                    "{}:{line}: label {other:?} for {id} is neither ham nor spam",
                    path.display()
                ),
            };
            messages.insert(bare_id(id).to_owned(), is_spam);
        }
        Ok(Labels {
            messages,
            recipients: HashMap::new(),
        })
    }

    /// The recipients' verdicts recorded since `since`; a later verdict of the same
    /// recipient on the same message replaces an earlier one.
    pub async fn from_feedback(log: &EventLog, since: DateTime<Utc>) -> Result<Labels> {
        let mut labels = Labels::default();
        let mut stream = crate::feedback::verdicts(log, since);
        while let Some(feedback) = stream.next().await {
            let feedback = feedback?;
            let is_spam = feedback.verdict == Verdict::Spam;
            labels.messages.insert(feedback.message_id.clone(), is_spam);
            labels.recipients.insert(
                (feedback.message_id, feedback.user.to_ascii_lowercase()),
                is_spam,
            );
        }
        Ok(labels)
    }

    /// The label of one recipient's copy: that recipient's own verdict when labels come
    /// from feedback, else the message's label.
    pub fn of_copy(
        &self,
        message_id: &str,
        header_id: Option<&str>,
        recipient: &str,
    ) -> Option<bool> {
        if !self.recipients.is_empty() {
            return self
                .recipients
                .get(&(message_id.to_owned(), recipient.to_ascii_lowercase()))
                .copied();
        }
        self.of_message(message_id, header_id)
    }

    /// The label of a message, by pampa's id or its `Message-ID` header.
    pub fn of_message(&self, message_id: &str, header_id: Option<&str>) -> Option<bool> {
        self.messages
            .get(message_id)
            .or_else(|| self.messages.get(bare_id(header_id?)))
            .copied()
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.recipients.len().max(self.messages.len())
    }
}

/// A `Message-ID` header without its angle brackets, so both spellings match.
fn bare_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}
