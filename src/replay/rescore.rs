//! `pampa replay --rescore [--rules DIR]`: runs the score stage again, and only it, over
//! the stored bodies with a candidate rule set, and diffs against what was recorded.
//!
//! The recorded `mail.scored` carries the score stage's own tags after its input's, so
//! the input's tags are a prefix of them. Its length is read from the input event itself
//! (the scored event's `causation_id`), which replay meets earlier in the log.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use pampa_bus::{BusError, EventLog};
use pampa_schemas::{Event, MailAnalysis, MailReceived, Tag};
use pampa_stages::score::{Score, ScoreConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::table;

/// How many rules the report lists, by how many messages they changed.
const TOP_RULES: usize = 15;
/// How many noted inputs between purges of the stale ones.
const PURGE_EVERY: usize = 10_000;

/// Only the number of message tags of a stage's output: the prefix the score stage saw.
#[derive(Deserialize)]
pub struct TagCount {
    #[serde(default)]
    tags: Vec<serde::de::IgnoredAny>,
}

/// The score stage with the candidate rules, and what it found so far.
pub struct Rescorer {
    score: Score,
    /// `--rules` as given, or the configured rule files.
    pub rule_files: Vec<PathBuf>,
    pub rules_loaded: usize,
    pub unsupported: usize,
    /// Tags per possible input event, by event id, with when it was stored, until its
    /// scored event uses it or it is older than the lookback.
    inputs: HashMap<String, (usize, DateTime<Utc>)>,
    /// Inputs noted since the last purge.
    noted: usize,
    pub stats: RescoreStats,
}

/// What the rescore changed.
#[derive(Default)]
pub struct RescoreStats {
    pub rescored: usize,
    /// Bodies that retention removed: counted and skipped.
    pub body_gone: usize,
    /// Scored events whose input event is no longer in the log.
    pub no_input: usize,
    pub changed: usize,
    pub higher: usize,
    pub lower: usize,
    pub sum_delta: f64,
    pub max_delta: f64,
    /// Per rule: messages it newly hits, messages it no longer hits.
    pub rules: BTreeMap<String, (usize, usize)>,
}

impl Rescorer {
    /// The configured score stage with `rules` in place of `stages.score.rules` (after
    /// the built-in rules, as in the configuration: a file there can add rules and
    /// override scores; `score NAME 0` turns a rule off).
    pub fn new(config: &ScoreConfig, rules: &[PathBuf]) -> Result<Rescorer> {
        let mut config = config.clone();
        if !rules.is_empty() {
            config.rules = rules.to_vec();
        }
        let (score, report) =
            Score::new(&config).context("cannot load the candidate rules for --rescore")?;
        Ok(Rescorer {
            score,
            rule_files: config.rules.clone(),
            rules_loaded: report.total(),
            unsupported: report.unsupported.len(),
            inputs: HashMap::new(),
            noted: 0,
            stats: RescoreStats::default(),
        })
    }

    /// Remembers an event that a scored event may name as its input. Most such events
    /// are never named (each message has several), so those older than `lookback` are
    /// dropped now and then: memory stays bounded on long ranges.
    pub fn note_input(
        &mut self,
        event_type: &str,
        id: &str,
        payload: &[u8],
        at: DateTime<Utc>,
        lookback: chrono::Duration,
    ) -> Result<()> {
        let tags = if event_type == MailReceived::EVENT_TYPE {
            0
        } else {
            pampa_schemas::decode_view::<MailAnalysis, TagCount>(payload)
                .with_context(|| format!("cannot decode event {id}"))?
                .payload
                .tags
                .len()
        };
        self.inputs.insert(id.to_owned(), (tags, at));
        self.noted += 1;
        if self.noted >= PURGE_EVERY {
            self.noted = 0;
            let cutoff = at - lookback;
            self.inputs.retain(|_, (_, stored)| *stored >= cutoff);
        }
        Ok(())
    }

    /// Scores one recorded message again. Returns all its tags and the new score, or
    /// `None` when it cannot be rescored (the body or the input is gone: counted).
    pub async fn rescore(
        &mut self,
        log: &EventLog,
        input_id: Option<&str>,
        analysis: &MailAnalysis,
    ) -> Result<Option<(Vec<Tag>, f64)>> {
        let Some((prefix, _)) = input_id.and_then(|id| self.inputs.remove(id)) else {
            self.stats.no_input += 1;
            return Ok(None);
        };
        let body = match log.get_blob(&analysis.received.blob).await {
            Ok(body) => body,
            Err(BusError::BlobMissing(_)) => {
                self.stats.body_gone += 1;
                return Ok(None);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the body of {}", analysis.received.message_id)
                })
            }
        };
        let prefix = prefix.min(analysis.tags.len());
        let mut input = analysis.clone();
        input.tags.truncate(prefix);
        input.score = None;
        for recipient in &mut input.recipients {
            recipient.decision = None;
        }
        // Regex work; this is a command-line tool, so it may hold its worker thread.
        let scored = tokio::task::block_in_place(|| self.score.score(&input, &body));
        let old_score = analysis.score.unwrap_or(0.0);
        let new_score = scored.verdict.score;
        let stats = &mut self.stats;
        stats.rescored += 1;
        let delta = new_score - old_score;
        if delta.abs() > 0.0005 {
            stats.changed += 1;
            if delta > 0.0 {
                stats.higher += 1;
            } else {
                stats.lower += 1;
            }
        }
        stats.sum_delta += delta;
        stats.max_delta = stats.max_delta.max(delta.abs());
        let old_names: Vec<&str> = analysis.tags[prefix..]
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for tag in &scored.tags {
            if !old_names.contains(&tag.name.as_str()) {
                stats.rules.entry(tag.name.clone()).or_default().0 += 1;
            }
        }
        for name in old_names {
            if !scored.tags.iter().any(|t| t.name == name) {
                stats.rules.entry(name.to_owned()).or_default().1 += 1;
            }
        }
        let mut tags = input.tags;
        tags.extend(scored.tags);
        Ok(Some((tags, new_score)))
    }

    /// The rules that changed most, by messages changed.
    fn top_rules(&self) -> Vec<(&str, usize, usize)> {
        let mut rules: Vec<(&str, usize, usize)> = self
            .stats
            .rules
            .iter()
            .map(|(name, (added, removed))| (name.as_str(), *added, *removed))
            .collect();
        rules.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(b.0)));
        rules.truncate(TOP_RULES);
        rules
    }

    pub fn json(&self) -> Value {
        let s = &self.stats;
        let rules: Vec<Value> = self
            .top_rules()
            .into_iter()
            .map(|(rule, added, removed)| json!({"rule": rule, "added": added, "removed": removed}))
            .collect();
        json!({
            "rule_files": self.rule_files,
            "rules_loaded": self.rules_loaded,
            "unsupported": self.unsupported,
            "rescored": s.rescored,
            "skipped_body_gone": s.body_gone,
            "skipped_no_input": s.no_input,
            "scores_changed": s.changed,
            "scores_higher": s.higher,
            "scores_lower": s.lower,
            "mean_delta": if s.rescored == 0 { 0.0 } else { s.sum_delta / s.rescored as f64 },
            "max_abs_delta": s.max_delta,
            "rules": rules,
        })
    }

    pub fn print(&self) {
        let s = &self.stats;
        println!(
            "Rescored {} messages with {} rules ({} unsupported items) from {}.",
            s.rescored,
            self.rules_loaded,
            self.unsupported,
            if self.rule_files.is_empty() {
                "the built-in set".to_owned()
            } else {
                format!(
                    "the built-in set and {}",
                    self.rule_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if s.body_gone + s.no_input > 0 {
            println!(
                "Skipped {} whose bodies retention removed and {} whose input event is gone.",
                s.body_gone, s.no_input
            );
        }
        let mean = if s.rescored == 0 {
            0.0
        } else {
            s.sum_delta / s.rescored as f64
        };
        println!(
            "{} scores changed ({} higher, {} lower); mean change {mean:+.2}, largest {:.2}.",
            s.changed, s.higher, s.lower, s.max_delta
        );
        let rules = self.top_rules();
        if !rules.is_empty() {
            let rows: Vec<Vec<String>> = rules
                .into_iter()
                .map(|(rule, added, removed)| {
                    vec![rule.to_owned(), added.to_string(), removed.to_string()]
                })
                .collect();
            table::print(&["RULE", "NEWLY HITS", "NO LONGER HITS"], &rows);
        }
    }
}
