//! What a replay counts, and how it prints: moves per level, affected users, labels.

use std::collections::{BTreeMap, HashMap};

use pampa_schemas::{disposition, Disposition, LevelSnapshot};
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

/// One recipient's recorded facts.
pub struct CopyFacts<'a> {
    pub address: &'a str,
    pub tag_names: Vec<&'a str>,
    /// The level recorded for it, if any (else the live stage's fallback).
    pub level: Option<&'a LevelSnapshot>,
    /// The recorded disposition; `None` if the score stage did not decide it.
    pub old: Option<Disposition>,
}

/// One scored message as replay needs it: the recorded facts, borrowed from the event.
pub struct Recorded<'a> {
    pub message_id: &'a str,
    pub header_id: Option<&'a str>,
    pub tag_names: Vec<&'a str>,
    pub copies: Vec<CopyFacts<'a>>,
    pub score: f64,
}

/// What a rescore found instead: the names of all the message's tags, and its score.
pub struct Rescored<'a> {
    pub tag_names: Vec<&'a str>,
    pub score: f64,
}

/// A message's score for the plot, with its label if any.
pub struct PlotPoint {
    pub old: f64,
    pub new: f64,
    pub is_spam: Option<bool>,
}

/// Everything a replay counts. Levels are counted by index into `level_names`, so a
/// decision costs no allocation.
#[derive(Default)]
pub struct Report {
    pub events: usize,
    pub decisions: usize,
    /// Recorded level names, in the order first seen, and the recorded limits of each.
    level_names: Vec<LevelSnapshot>,
    level_index: HashMap<String, usize>,
    /// Decisions per recorded level.
    level_decisions: Vec<usize>,
    /// (level index, old rank, new rank) → the move, stay-puts included; ranks because
    /// `Disposition` has no order of its own.
    moves: HashMap<(usize, u8, u8), MoveStat>,
    /// Moved decisions per recipient.
    pub users: HashMap<String, usize>,
    pub old: Confusion,
    pub new: Confusion,
    pub labelled: usize,
    /// Filled only when a plot is asked for.
    pub points: Vec<PlotPoint>,
}

impl Report {
    fn level_slot(&mut self, level: &LevelSnapshot) -> usize {
        if let Some(index) = self.level_index.get(level.name.as_str()) {
            return *index;
        }
        let index = self.level_names.len();
        self.level_index.insert(level.name.clone(), index);
        self.level_names.push(level.clone());
        self.level_decisions.push(0);
        index
    }

    /// Counts one message's decisions: the recorded one against the one the proposal
    /// (and the rescore, if any) gives, through the live stage's own rule.
    pub fn add(
        &mut self,
        recorded: &Recorded<'_>,
        rescored: Option<&Rescored<'_>>,
        proposal: &Proposal,
        user: Option<&str>,
        labels: Option<&Labels>,
        keep_points: bool,
    ) {
        let (tag_names, score) = match rescored {
            Some(r) => (&r.tag_names, r.score),
            None => (&recorded.tag_names, recorded.score),
        };
        let message_id = recorded.message_id;
        let fallback = proposal.fallback();
        let mut decided_any = false;
        for copy in &recorded.copies {
            if user.is_some_and(|u| !copy.address.eq_ignore_ascii_case(u)) {
                continue;
            }
            // A copy the score stage did not decide on has nothing to compare with.
            let Some(old) = copy.old else {
                continue;
            };
            decided_any = true;
            // The same fallback as the live stage, for events without a recorded level.
            let recorded_level = copy.level.unwrap_or(fallback);
            let level = proposal.level_for(recorded_level);
            let names = tag_names.iter().chain(&copy.tag_names).copied();
            let new = disposition(names, score, level);
            self.decisions += 1;
            let slot = self.level_slot(recorded_level);
            self.level_decisions[slot] += 1;
            let stat = self
                .moves
                .entry((slot, rank(old), rank(new)))
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
                match self.users.get_mut(copy.address) {
                    Some(moved) => *moved += 1,
                    None => {
                        self.users.insert(copy.address.to_owned(), 1);
                    }
                }
            }
            if let Some(is_spam) =
                labels.and_then(|l| l.of_copy(message_id, recorded.header_id, copy.address))
            {
                self.labelled += 1;
                self.old.add(is_spam, old);
                self.new.add(is_spam, new);
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

    /// The moves proper, in a stable order: by level name, then mildest first.
    pub fn moved(&self) -> Vec<(&str, &MoveStat)> {
        let mut moved: Vec<(&str, u8, u8, &MoveStat)> = self
            .moves
            .iter()
            .filter(|(_, stat)| stat.from != stat.to)
            .map(|((slot, from, to), stat)| {
                (self.level_names[*slot].name.as_str(), *from, *to, stat)
            })
            .collect();
        moved.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        moved.into_iter().map(|(l, _, _, s)| (l, s)).collect()
    }

    /// Decisions per recorded level name.
    pub fn per_level(&self) -> BTreeMap<&str, usize> {
        self.level_names
            .iter()
            .zip(&self.level_decisions)
            .map(|(level, n)| (level.name.as_str(), *n))
            .collect()
    }

    /// The recorded limits of each level seen (the first seen), for the plot.
    pub fn recorded_levels(&self) -> &[LevelSnapshot] {
        &self.level_names
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
