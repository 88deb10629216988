//! `score`: turns every finding into the message score and decides each recipient's
//! disposition with the pure [`pampa_schemas::decide`].
//!
//! A message's score is the sum of the weights of its tags:
//! - the tags of earlier stages (`RBL_*`, `URIBL_*`, `VIRUS:*`, …);
//! - the hits of the SpamAssassin-syntax rule set (pampa's own default set in
//!   `stages/rules/`, plus the files in `[stages.score] rules`);
//! - `BAYES_*` bands from the statistical classifier, when a model is configured;
//! - SPF, DKIM and DMARC results from the `auth` stage (weights in
//!   [`crate::auth::DEFAULT_AUTH_WEIGHTS`]).
//!
//! A weight in `[stages.score.tags]` wins over a tag's own (a rule's `score`, an RBL's
//! weight per code), so operators can retune any signal in one place.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use pampa_schemas::{decide, LevelSnapshot, MailAnalysis, Tag};
use serde::Deserialize;

use crate::{
    classifier::{bayes_tags, Classifier, ClassifierError},
    rules::{LoadReport, RuleSet, RulesError},
    Body, Findings, Stage, StageError, Verdict,
};

/// pampa's own default rule set, built into the binary so `pampa up` needs no files.
pub const DEFAULT_RULES: [(&str, &str); 3] = [
    ("10_headers.cf", include_str!("../rules/10_headers.cf")),
    ("20_body.cf", include_str!("../rules/20_body.cf")),
    ("30_uri.cf", include_str!("../rules/30_uri.cf")),
];

/// Weights of the classifier's bands, unless `[stages.score.tags]` sets them.
///
/// They are steeper than SpamAssassin's (3.5 for `BAYES_99`) because pampa's own rule set
/// is small: the classifier has to carry more of the decision, and at p >= 0.95 it alone
/// files mail as Spam at the `normal` level. In 5-fold cross-validation on the tuning
/// corpus no ham reached p >= 0.99, and confident ham (`BAYES_00`) pulls the score down,
/// so a rule false positive alone rarely crosses the cut.
pub const DEFAULT_BAYES_WEIGHTS: [(&str, f64); 10] = [
    ("BAYES_00", -3.0),
    ("BAYES_05", -1.0),
    ("BAYES_20", -0.5),
    ("BAYES_40", -0.2),
    ("BAYES_50", 0.8),
    ("BAYES_60", 2.0),
    ("BAYES_80", 4.0),
    ("BAYES_95", 5.0),
    ("BAYES_99", 6.0),
    ("BAYES_999", 0.5),
];

/// The `[stages.score]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Score per tag name. A name ending in `*` matches a prefix (`"VIRUS:*" = 10.0`).
    pub tags: HashMap<String, f64>,
    /// Extra rule files, directories or `*.cf` patterns, in SpamAssassin's syntax
    /// (`["/usr/share/spamassassin/*.cf", "/etc/pampa/rules/*.cf"]`).
    pub rules: Vec<PathBuf>,
    /// Whether pampa's built-in default rule set is loaded too.
    pub default_rules: bool,
    /// A model from `pampa train`; its probability becomes `BAYES_*` hits.
    pub classifier: Option<PathBuf>,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            tags: HashMap::new(),
            rules: Vec::new(),
            default_rules: true,
            classifier: None,
        }
    }
}

/// Why the score stage cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// A rule file could not be read.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The classifier model could not be loaded.
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
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

/// The seeded spam levels, for tools that run without the directory.
pub fn seeded_levels() -> Vec<LevelSnapshot> {
    let level = |name: &str, cut: Option<f64>, discard: Option<f64>| LevelSnapshot {
        name: name.to_owned(),
        cut,
        discard,
    };
    vec![
        level("strict", Some(3.0), Some(8.0)),
        level("normal", Some(5.0), Some(12.0)),
        level("tolerant", Some(8.0), Some(20.0)),
        level("off", None, None),
    ]
}

/// The rule set the configuration names: the default set and the extra files.
pub fn load_rules(config: &ScoreConfig) -> Result<(RuleSet, LoadReport), ScoreError> {
    let defaults: Vec<(&Path, &str)> = if config.default_rules {
        DEFAULT_RULES
            .iter()
            .map(|(name, text)| (Path::new(*name), *text))
            .collect()
    } else {
        Vec::new()
    };
    Ok(RuleSet::load_after(&defaults, &config.rules)?)
}

/// The score stage.
#[derive(Clone)]
pub struct Score {
    weights: HashMap<String, f64>,
    rules: Arc<RuleSet>,
    classifier: Option<Arc<Classifier>>,
}

impl std::fmt::Debug for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Score")
            .field("rules", &self.rules.len())
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

/// What scoring one message found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The tags this stage added: rule hits and `BAYES_*`.
    pub tags: Vec<Tag>,
    /// The classifier's spam probability, if a ready model is loaded.
    pub probability: Option<f64>,
    /// The score and every recipient's decision.
    pub verdict: Verdict,
}

impl Score {
    /// Loads the rules and the classifier the configuration names. The load report says
    /// what in the rule files was not understood; the caller logs it.
    pub fn new(config: &ScoreConfig) -> Result<(Score, LoadReport), ScoreError> {
        let (rules, report) = load_rules(config)?;
        let classifier = match &config.classifier {
            Some(path) => Some(Arc::new(Classifier::load(path)?)),
            None => None,
        };
        Ok((
            Score::with_parts(config, Arc::new(rules), classifier),
            report,
        ))
    }

    /// A score stage from parts already loaded (`pampa eval` trains a classifier per fold).
    pub fn with_parts(
        config: &ScoreConfig,
        rules: Arc<RuleSet>,
        classifier: Option<Arc<Classifier>>,
    ) -> Score {
        let mut weights: HashMap<String, f64> = DEFAULT_BAYES_WEIGHTS
            .iter()
            .chain(crate::auth::DEFAULT_AUTH_WEIGHTS.iter())
            .map(|(name, weight)| (name.to_string(), *weight))
            .collect();
        weights.extend(config.tags.iter().map(|(k, v)| (k.clone(), *v)));
        Score {
            weights,
            rules,
            classifier,
        }
    }

    /// Only weights, no rules or classifier: for tests of the decision logic.
    pub fn weights_only(tags: HashMap<String, f64>) -> Score {
        let config = ScoreConfig {
            tags,
            default_rules: false,
            ..ScoreConfig::default()
        };
        let rules = RuleSet::from_text("", std::path::Path::new("<none>")).0;
        Score::with_parts(&config, Arc::new(rules), None)
    }

    /// The weight of one tag: the configured one, else its own, else a configured
    /// prefix (`VIRUS:*`), else 0.
    pub fn weight(&self, tag: &Tag) -> f64 {
        if let Some(weight) = self.weights.get(&tag.name) {
            return *weight;
        }
        if let Some(weight) = tag.weight {
            return weight;
        }
        self.weights
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

    /// The tags the rules and the classifier find in a raw message.
    pub fn examine(&self, raw: &[u8]) -> (Vec<Tag>, Option<f64>) {
        let mut tags: Vec<Tag> = self
            .rules
            .check(raw)
            .iter()
            .map(|hit| hit.to_tag())
            .collect();
        let probability = self.classifier.as_ref().and_then(|c| c.probability(raw));
        if let Some(p) = probability {
            for band in bayes_tags(p) {
                tags.push(Tag::new(*band, format!("spam probability {p:.4}")));
            }
        }
        (tags, probability)
    }

    /// Sums the weights of the message's tags and decides for each recipient. Pure, so
    /// replay can call it.
    pub fn verdict(&self, analysis: &MailAnalysis, new_tags: &[Tag]) -> Verdict {
        let score: f64 = analysis
            .tags
            .iter()
            .chain(new_tags)
            .map(|t| self.weight(t))
            .sum();
        // Rounded, so equal displays mean equal decisions; `+ 0.0` turns the -0.0 that an
        // empty float sum starts from into 0.0.
        let score = (score * 1000.0).round() / 1000.0 + 0.0;
        let all_tags: Vec<Tag> = analysis.tags.iter().chain(new_tags).cloned().collect();
        let decisions = analysis
            .recipients
            .iter()
            .map(|r| {
                let level = r.level.clone().unwrap_or_else(fallback_level);
                (r.address.clone(), decide(&all_tags, &r.tags, score, &level))
            })
            .collect();
        Verdict { score, decisions }
    }

    /// Examines a message and decides: what the stage does, without the bus.
    pub fn score(&self, analysis: &MailAnalysis, raw: &[u8]) -> Scored {
        let (tags, probability) = self.examine(raw);
        let verdict = self.verdict(analysis, &tags);
        Scored {
            tags,
            probability,
            verdict,
        }
    }
}

impl Stage for Score {
    const NAME: &'static str = "score";
    const NEEDS_BODY: bool = true;

    async fn process(&self, analysis: &MailAnalysis, body: &Body) -> Result<Findings, StageError> {
        let this = self.clone();
        let analysis = analysis.clone();
        let body = body.clone();
        // Regex work on a large message is CPU-bound; keep it off the async workers.
        let scored = tokio::task::spawn_blocking(move || this.score(&analysis, body.raw()))
            .await
            .map_err(|e| StageError::Transient(e.to_string().into()))?;
        Ok(Findings {
            tags: scored.tags,
            verdict: Some(scored.verdict),
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
            submitted_by: None,
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
        tags.insert("RBL_OVERRIDDEN".to_owned(), 0.25);
        let score = Score::weights_only(tags);
        let mut a = analysis(&[("strict@x", Some(3.0), Some(8.0)), ("off@x", None, None)]);
        a.tags.push(Tag {
            name: "RBL_TEST".into(),
            evidence: "127.0.0.2".into(),
            weight: Some(4.0),
        });
        a.tags.push(Tag {
            name: "RBL_OVERRIDDEN".into(),
            evidence: String::new(),
            weight: Some(9.0),
        });
        a.tags.push(Tag::new("SUBJ_ALL_CAPS", ""));
        a.tags.push(Tag::new("UNKNOWN_TAG", ""));
        let verdict = score.verdict(&a, &[]);
        assert_eq!(verdict.score, 5.75);
        assert_eq!(verdict.decisions[0].1.disposition, Disposition::Spam);
        assert_eq!(verdict.decisions[1].1.disposition, Disposition::Inbox);
        assert_eq!(score.weight(&Tag::new("VIRUS:Eicar", "")), 0.5);
        assert_eq!(score.weight(&Tag::new("BAYES_99", "")), 6.0);
        assert_eq!(score.weight(&Tag::new("DMARC_FAIL_REJECT", "")), 3.0);
        assert_eq!(
            score
                .verdict(&analysis(&[("a@x", None, None)]), &[])
                .score
                .to_string(),
            "0"
        );
    }

    #[test]
    fn extra_rule_files_load_after_the_defaults_and_can_use_them() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("local.cf");
        std::fs::write(
            &extra,
            "header LOCAL_SUBJ Subject =~ /quarterly/i\nscore LOCAL_SUBJ 2.5\n\
             meta LOCAL_META LOCAL_SUBJ && !__NEVER_DEFINED_HERE\nscore LOCAL_META 0.5\n",
        )
        .unwrap();
        let config = ScoreConfig {
            rules: vec![extra.clone()],
            ..ScoreConfig::default()
        };
        let (score, report) = Score::new(&config).unwrap();
        assert!(
            report.files.iter().any(|f| f == &extra),
            "{:?}",
            report.files
        );
        assert!(report.files.len() > 1, "the default set loads too");
        let (tags, _) =
            score.examine(b"Subject: Quarterly numbers\r\nFrom: a@example.net\r\n\r\nhi\r\n");
        assert!(
            tags.iter()
                .any(|t| t.name == "LOCAL_SUBJ" && t.weight == Some(2.5)),
            "{tags:?}"
        );
        let missing = ScoreConfig {
            rules: vec![dir.path().join("nope.cf")],
            ..ScoreConfig::default()
        };
        assert!(Score::new(&missing).is_err());
    }

    #[test]
    fn the_default_rule_set_is_built_in_and_loads() {
        let (score, report) = Score::new(&ScoreConfig::default()).expect("default rules load");
        assert!(report.total() > 0, "{report}");
        assert!(
            report.unsupported.is_empty(),
            "the default set must be fully supported:\n{report:?}"
        );
        let (tags, p) = score.examine(b"Subject: hello\r\nFrom: a@example.net\r\n\r\nhi\r\n");
        assert!(p.is_none());
        assert!(tags.iter().all(|t| t.weight.is_some()));
    }
}
