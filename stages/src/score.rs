//! `score`: sums tag weights into the message score and decides each recipient's
//! disposition with [`pampa_schemas::decide`].
//!
//! The weights come from `[stages.score.tags]` until the rule engine lands; a tag that
//! carries its own weight (an RBL's weight per return code) keeps it.

use std::collections::HashMap;

use pampa_schemas::{decide, LevelSnapshot, MailAnalysis, Tag};
use serde::Deserialize;

use crate::{Body, Findings, Stage, StageError, Verdict};

/// The `[stages.score]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Score per tag name. A name ending in `*` matches a prefix (`"VIRUS:*" = 10.0`).
    pub tags: HashMap<String, f64>,
}

/// The level used for a recipient whose level was not recorded (events from before
/// levels were recorded): the seeded `normal` level.
pub fn fallback_level() -> LevelSnapshot {
    LevelSnapshot {
        name: "normal".to_owned(),
        cut: Some(5.0),
        discard: Some(12.0),
    }
}

/// The score stage.
#[derive(Debug, Clone, Default)]
pub struct Score {
    config: ScoreConfig,
}

impl Score {
    /// A score stage with these weights.
    pub fn new(config: ScoreConfig) -> Self {
        Score { config }
    }

    /// The weight of one tag: its own, else the configured one, else 0.
    pub fn weight(&self, tag: &Tag) -> f64 {
        if let Some(weight) = tag.weight {
            return weight;
        }
        if let Some(weight) = self.config.tags.get(&tag.name) {
            return *weight;
        }
        self.config
            .tags
            .iter()
            .filter_map(|(pattern, weight)| {
                let prefix = pattern.strip_suffix('*')?;
                tag.name
                    .starts_with(prefix)
                    .then_some((prefix.len(), *weight))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, weight)| weight)
            .unwrap_or(0.0)
    }

    /// Scores an analysis and decides for each recipient. Pure, so replay can call it.
    pub fn verdict(&self, analysis: &MailAnalysis) -> Verdict {
        let score: f64 = analysis.tags.iter().map(|t| self.weight(t)).sum();
        // Rounded, so equal displays mean equal decisions; `+ 0.0` turns the -0.0 that an
        // empty float sum starts from into 0.0.
        let score = (score * 1000.0).round() / 1000.0 + 0.0;
        let decisions = analysis
            .recipients
            .iter()
            .map(|r| {
                let level = r.level.clone().unwrap_or_else(fallback_level);
                (
                    r.address.clone(),
                    decide(&analysis.tags, &r.tags, score, &level),
                )
            })
            .collect();
        Verdict { score, decisions }
    }
}

impl Stage for Score {
    const NAME: &'static str = "score";
    const NEEDS_BODY: bool = false;

    async fn process(&self, analysis: &MailAnalysis, _body: &Body) -> Result<Findings, StageError> {
        Ok(Findings {
            verdict: Some(self.verdict(analysis)),
            ..Findings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pampa_schemas::{Disposition, MailReceived};

    fn analysis(levels: &[(&str, Option<f64>, Option<f64>)]) -> MailAnalysis {
        let received = MailReceived {
            message_id: "m".into(),
            client: pampa_schemas::ClientInfo {
                ip: "192.0.2.1".into(),
                helo: "h".into(),
                tls: false,
            },
            mail_from: "s@example.net".into(),
            recipients: levels.iter().map(|(a, _, _)| a.to_string()).collect(),
            blob: pampa_schemas::BlobRef {
                key: "m".into(),
                size: 0,
                sha256: String::new(),
            },
            header_message_id: None,
            received_by: "mx".into(),
            received_at: chrono::Utc::now(),
            levels: levels
                .iter()
                .map(|(a, cut, discard)| pampa_schemas::RecipientLevel {
                    address: a.to_string(),
                    level: LevelSnapshot {
                        name: "x".into(),
                        cut: *cut,
                        discard: *discard,
                    },
                })
                .collect(),
        };
        MailAnalysis::start(received)
    }

    #[test]
    fn weights_sum_and_each_recipient_gets_its_own_decision() {
        let mut tags = HashMap::new();
        tags.insert("SUBJ_ALL_CAPS".to_owned(), 1.5);
        tags.insert("VIRUS:*".to_owned(), 0.5);
        let score = Score::new(ScoreConfig { tags });
        let mut a = analysis(&[("strict@x", Some(3.0), Some(8.0)), ("off@x", None, None)]);
        a.tags.push(Tag {
            name: "RBL_TEST".into(),
            evidence: "127.0.0.2".into(),
            weight: Some(4.0),
        });
        a.tags.push(Tag::new("SUBJ_ALL_CAPS", ""));
        a.tags.push(Tag::new("UNKNOWN_TAG", ""));
        let verdict = score.verdict(&a);
        assert_eq!(verdict.score, 5.5);
        assert_eq!(verdict.decisions[0].1.disposition, Disposition::Spam);
        assert_eq!(verdict.decisions[1].1.disposition, Disposition::Inbox);
        assert_eq!(score.weight(&Tag::new("VIRUS:Eicar", "")), 0.5);
    }
}
