//! What a replay counts, and how it prints: moves per level, affected users, labels.

use std::collections::{BTreeMap, HashMap};

use pampa_schemas::{decide, Disposition, LevelSnapshot, RecipientAnalysis, Tag};
use pampa_stages::score::fallback_level;
use serde::Serialize;
use serde_json::{json, Value};

use super::{labels::Labels, Proposal};

/// How many message ids are kept per move, as examples to `pampa trace`.
const SAMPLES_PER_MOVE: usize = 5;
/// How many users `--show-users` lists.
pub const TOP_USERS: usize = 10;

/// Labelled decisions under one setting.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Confusion {
    pub spam: usize,
    pub ham: usize,
    pub spam_caught: usize,
    pub ham_to_spam: usize,
    pub ham_discarded: usize,
}

impl Confusion {
    fn add(&mut self, is_spam: bool, disposition: Disposition) {
        if is_spam {
            self.spam += 1;
            if disposition != Disposition::Inbox {
                self.spam_caught += 1;
            }
        } else {
            self.ham += 1;
            match disposition {
                Disposition::Spam => self.ham_to_spam += 1,
                Disposition::Discard => self.ham_discarded += 1,
                _ => {}
            }
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "spam": self.spam,
            "ham": self.ham,
            "spam_caught": self.spam_caught,
            "spam_caught_rate": rate(self.spam_caught, self.spam),
            "ham_to_spam": self.ham_to_spam,
            "ham_to_spam_rate": rate(self.ham_to_spam, self.ham),
            "ham_discarded": self.ham_discarded,
            "ham_discarded_rate": rate(self.ham_discarded, self.ham),
        })
    }
}

pub fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn percent(part: usize, whole: usize) -> String {
    format!("{:.1}%", 100.0 * rate(part, whole))
}

/// One move (or a non-move when `from == to`) within one level.
pub struct MoveStat {
    pub from: Disposition,
    pub to: Disposition,
    pub count: usize,
    pub samples: Vec<String>,
}

/// One scored message as replay needs it: the recorded facts.
pub struct Recorded<'a> {
    pub message_id: &'a str,
    pub header_id: Option<&'a str>,
    pub tags: &'a [Tag],
    pub recipients: &'a [RecipientAnalysis],
    pub score: f64,
}

/// What a rescore found instead: all the message's tags and its new score.
pub struct Rescored<'a> {
    pub tags: &'a [Tag],
    pub score: f64,
}

/// A message's score for the plot, with its label if any.
pub struct PlotPoint {
    pub old: f64,
    pub new: f64,
    pub is_spam: Option<bool>,
}

/// Everything a replay counts.
#[derive(Default)]
pub struct Report {
    pub events: usize,
    pub decisions: usize,
    /// Decisions per recorded level name.
    pub per_level: BTreeMap<String, usize>,
    /// The recorded limits of each level (the last seen), for the plot.
    pub recorded_levels: BTreeMap<String, LevelSnapshot>,
    /// Keyed by (recorded level name, old rank, new rank), stay-puts included; ranks
    /// because `Disposition` has no order of its own.
    pub moves: BTreeMap<(String, u8, u8), MoveStat>,
    /// Moved decisions per recipient.
    pub users: HashMap<String, usize>,
    pub old: Confusion,
    pub new: Confusion,
    pub labelled: usize,
    /// Filled only when a plot is asked for.
    pub points: Vec<PlotPoint>,
}

impl Report {
    /// Counts one message's decisions: the recorded one against the one the proposal
    /// (and the rescore, if any) gives.
    pub fn add(
        &mut self,
        recorded: &Recorded<'_>,
        rescored: Option<&Rescored<'_>>,
        proposal: &Proposal,
        user: Option<&str>,
        labels: Option<&Labels>,
        keep_points: bool,
    ) {
        let (tags, score) = match rescored {
            Some(r) => (r.tags, r.score),
            None => (recorded.tags, recorded.score),
        };
        let message_id = recorded.message_id;
        let mut decided_any = false;
        for recipient in recorded.recipients {
            if user.is_some_and(|u| !recipient.address.eq_ignore_ascii_case(u)) {
                continue;
            }
            // A copy the score stage did not decide on has nothing to compare with.
            let Some(old) = recipient.decision.as_ref().map(|d| d.disposition) else {
                continue;
            };
            decided_any = true;
            // The same fallback as the live stage, for events without a recorded level.
            let recorded_level = recipient.level.clone().unwrap_or_else(fallback_level);
            let level = proposal.level_for(&recorded_level);
            let new = decide(tags, &recipient.tags, score, &level).disposition;
            self.decisions += 1;
            *self
                .per_level
                .entry(recorded_level.name.clone())
                .or_default() += 1;
            let stat = self
                .moves
                .entry((recorded_level.name.clone(), rank(old), rank(new)))
                .or_insert_with(|| MoveStat {
                    from: old,
                    to: new,
                    count: 0,
                    samples: Vec::new(),
                });
            stat.count += 1;
            if old != new {
                if stat.samples.len() < SAMPLES_PER_MOVE
                    && !stat.samples.iter().any(|s| s == message_id)
                {
                    stat.samples.push(message_id.to_owned());
                }
                *self.users.entry(recipient.address.clone()).or_default() += 1;
            }
            if let Some(is_spam) =
                labels.and_then(|l| l.of_copy(message_id, recorded.header_id, &recipient.address))
            {
                self.labelled += 1;
                self.old.add(is_spam, old);
                self.new.add(is_spam, new);
            }
            if !self.recorded_levels.contains_key(&recorded_level.name) {
                self.recorded_levels
                    .insert(recorded_level.name.clone(), recorded_level);
            }
        }
        if keep_points && decided_any {
            self.points.push(PlotPoint {
                old: recorded.score,
                new: score,
                is_spam: labels.and_then(|l| l.of_message(message_id, recorded.header_id)),
            });
        }
    }

    /// The moves proper, in a stable order.
    pub fn moved(&self) -> impl Iterator<Item = (&str, &MoveStat)> {
        self.moves
            .iter()
            .filter(|(_, stat)| stat.from != stat.to)
            .map(|((level, _, _), stat)| (level.as_str(), stat))
    }

    pub fn top_users(&self) -> Vec<(&str, usize)> {
        let mut users: Vec<(&str, usize)> =
            self.users.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        users.truncate(TOP_USERS);
        users
    }
}

/// A disposition's place from mildest to harshest, for a stable table order.
fn rank(disposition: Disposition) -> u8 {
    match disposition {
        Disposition::Inbox => 0,
        Disposition::Spam => 1,
        Disposition::Quarantine => 2,
        Disposition::Discard => 3,
    }
}

/// `Inbox`, `Spam`, … for the move column.
pub fn title(disposition: Disposition) -> &'static str {
    match disposition {
        Disposition::Inbox => "Inbox",
        Disposition::Spam => "Spam",
        Disposition::Quarantine => "Quarantine",
        Disposition::Discard => "Discard",
    }
}
