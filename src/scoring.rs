//! `pampa score` and `pampa eval`: the rule writer's tools, with no bus.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::Args;
use pampa_schemas::{decide, Disposition, LevelSnapshot, MailAnalysis, MailReceived, Tag};
use pampa_stages::{
    classifier::{strip_mbox_from, Classifier},
    score::{load_rules, seeded_levels, Score},
};
use serde::Serialize;

use crate::{
    config::Config,
    plot::{histogram_svg, Line, LineKind, Series, HAM_COLOUR, SPAM_COLOUR},
    table,
    train::message_files,
};

#[derive(Args)]
pub struct ScoreArgs {
    /// Raw messages (an mbox `From ` first line is skipped).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A folder of ham, read recursively. May be given more than once.
    #[arg(long, value_name = "DIR", required = true)]
    ham: Vec<PathBuf>,
    /// A folder of spam, read recursively. May be given more than once.
    #[arg(long, value_name = "DIR", required = true)]
    spam: Vec<PathBuf>,
    /// Cross-validation folds: the classifier is trained on all folds but one and scores
    /// that one, so no message is scored by a model that saw it. 0 or 1: no classifier,
    /// unless --model is given.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Score with this trained model instead of cross-validating (only fair on mail the
    /// model was not trained on).
    #[arg(long, value_name = "MODEL", conflicts_with = "folds")]
    model: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw the ham and spam score histograms with each level's cut and discard.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// A message with no recipients, for scoring outside the pipeline.
fn offline_analysis() -> MailAnalysis {
    MailAnalysis::start(MailReceived {
        submitted_by: None,
        message_id: String::new(),
        client: pampa_schemas::ClientInfo {
            ip: String::new(),
            helo: String::new(),
            tls: false,
        },
        mail_from: String::new(),
        recipients: Vec::new(),
        blob: pampa_schemas::BlobRef {
            key: String::new(),
            size: 0,
            sha256: String::new(),
        },
        header_message_id: None,
        received_by: String::new(),
        received_at: chrono::Utc::now(),
        levels: Vec::new(),
    })
}

fn read_message(path: &PathBuf) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(strip_mbox_from(&raw).to_vec())
}

fn disposition_at(tags: &[Tag], score: f64, level: &LevelSnapshot) -> Disposition {
    decide(tags, &[], score, level).disposition
}

#[derive(Serialize)]
struct ScoredFile {
    file: String,
    score: f64,
    probability: Option<f64>,
    hits: Vec<ScoredHit>,
    dispositions: BTreeMap<String, &'static str>,
}

#[derive(Serialize)]
struct ScoredHit {
    name: String,
    score: f64,
    describe: String,
}

/// `pampa score FILE…`.
pub fn score(config: &Config, args: &ScoreArgs) -> Result<()> {
    let (scorer, report) =
        Score::new(&config.stages.score).context("cannot load the score stage")?;
    if !report.unsupported.is_empty() {
        eprintln!(
            "{} rule items are not supported and score nothing (see the log of `pampa up`).",
            report.unsupported.len()
        );
    }
    let levels = seeded_levels();
    let analysis = offline_analysis();
    let mut out = Vec::new();
    for path in &args.files {
        let raw = read_message(path)?;
        let scored = scorer.score(&analysis, &raw);
        let mut hits: Vec<ScoredHit> = scored
            .tags
            .iter()
            .map(|t| ScoredHit {
                name: t.name.clone(),
                score: scorer.weight(t),
                describe: t.evidence.clone(),
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .abs()
                .total_cmp(&a.score.abs())
                .then(a.name.cmp(&b.name))
        });
        let dispositions = levels
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    disposition_at(&scored.tags, scored.verdict.score, l).as_str(),
                )
            })
            .collect();
        out.push(ScoredFile {
            file: path.display().to_string(),
            score: scored.verdict.score,
            probability: scored.probability,
            hits,
            dispositions,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for file in out {
        println!("{}: score {:.1}", file.file, file.score);
        let rows: Vec<Vec<String>> = file
            .hits
            .iter()
            .map(|h| {
                vec![
                    format!("{:.1}", h.score),
                    h.name.clone(),
                    h.describe.clone(),
                ]
            })
            .collect();
        table::print(&["SCORE", "RULE", "DESCRIPTION"], &rows);
        let levels: Vec<String> = file
            .dispositions
            .iter()
            .map(|(l, d)| format!("{l}: {d}"))
            .collect();
        println!("  {}\n", levels.join(", "));
    }
    Ok(())
}

#[derive(Serialize)]
struct LevelReport {
    name: String,
    cut: Option<f64>,
    discard: Option<f64>,
    spam_caught: f64,
    ham_to_spam: f64,
    ham_discarded: f64,
}

#[derive(Serialize)]
struct EvalReport {
    messages: usize,
    ham: usize,
    spam: usize,
    folds: usize,
    levels: Vec<LevelReport>,
}

struct Sample {
    raw: Vec<u8>,
    is_spam: bool,
}

/// `pampa eval`.
pub fn eval(config: &Config, args: &EvalArgs) -> Result<()> {
    let mut samples = Vec::new();
    for (dirs, is_spam) in [(&args.ham, false), (&args.spam, true)] {
        for dir in dirs {
            for path in message_files(dir)? {
                samples.push(Sample {
                    raw: read_message(&path)?,
                    is_spam,
                });
            }
        }
    }
    let (ham, spam) = (
        samples.iter().filter(|s| !s.is_spam).count(),
        samples.iter().filter(|s| s.is_spam).count(),
    );
    if ham == 0 || spam == 0 {
        bail!("eval needs both ham and spam: found {ham} ham and {spam} spam messages");
    }
    let (rules, report) = load_rules(&config.stages.score).context("cannot load the rules")?;
    let rules = Arc::new(rules);
    eprintln!(
        "{} rules loaded, {} unsupported items skipped.",
        report.total(),
        report.unsupported.len()
    );
    let folds = if args.model.is_some() {
        1
    } else {
        args.folds.max(1)
    };
    let fixed_model = match &args.model {
        Some(path) => Some(Arc::new(Classifier::load(path)?)),
        None => None,
    };
    // (score, tags, is_spam) per message, in sample order.
    let mut results: Vec<Option<(f64, Vec<Tag>)>> = vec![None; samples.len()];
    for fold in 0..folds {
        let classifier = if let Some(model) = &fixed_model {
            Some(model.clone())
        } else if folds > 1 {
            let mut model = Classifier::new();
            for (i, sample) in samples.iter().enumerate() {
                if i % folds != fold {
                    model.train(&sample.raw, sample.is_spam);
                }
            }
            Some(Arc::new(model))
        } else {
            None
        };
        let scorer = Score::with_parts(&config.stages.score, rules.clone(), classifier);
        let analysis = offline_analysis();
        let members: Vec<usize> = (0..samples.len()).filter(|i| i % folds == fold).collect();
        // Two workers: the machines this runs on have few cores, and scoring is CPU-bound.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        let chunk = members.len().div_ceil(workers).max(1);
        let scored: Vec<(usize, f64, Vec<Tag>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = members
                .chunks(chunk)
                .map(|part| {
                    let (scorer, analysis, samples) = (&scorer, &analysis, &samples);
                    scope.spawn(move || {
                        part.iter()
                            .map(|&i| {
                                let s = scorer.score(analysis, &samples[i].raw);
                                (i, s.verdict.score, s.tags)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (i, score, tags) in scored {
            results[i] = Some((score, tags));
        }
        eprintln!("fold {}/{} scored", fold + 1, folds);
    }
    let levels: Vec<LevelReport> = seeded_levels()
        .into_iter()
        .map(|level| {
            let (mut caught, mut to_spam, mut discarded) = (0usize, 0usize, 0usize);
            for (sample, result) in samples.iter().zip(&results) {
                let Some((score, tags)) = result else {
                    continue;
                };
                let d = disposition_at(tags, *score, &level);
                match (sample.is_spam, d) {
                    (true, Disposition::Spam | Disposition::Discard | Disposition::Quarantine) => {
                        caught += 1
                    }
                    (false, Disposition::Spam) => to_spam += 1,
                    (false, Disposition::Discard) => discarded += 1,
                    _ => {}
                }
            }
            LevelReport {
                name: level.name,
                cut: level.cut,
                discard: level.discard,
                spam_caught: caught as f64 / spam as f64,
                ham_to_spam: to_spam as f64 / ham as f64,
                ham_discarded: discarded as f64 / ham as f64,
            }
        })
        .collect();
    if let Some(path) = &args.plot {
        let scores: Vec<(f64, bool)> = samples
            .iter()
            .zip(&results)
            .filter_map(|(s, r)| r.as_ref().map(|(score, _)| (*score, s.is_spam)))
            .collect();
        std::fs::write(path, plot_svg(&scores, &levels))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = EvalReport {
        messages: samples.len(),
        ham,
        spam,
        folds,
        levels,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} messages ({} ham, {} spam), classifier {}",
        report.messages,
        ham,
        spam,
        match (&args.model, folds) {
            (Some(m), _) => format!("from {}", m.display()),
            (None, 1) => "off".to_owned(),
            (None, n) => format!("cross-validated over {n} folds"),
        }
    );
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let opt = |x: Option<f64>| {
        x.map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows: Vec<Vec<String>> = report
        .levels
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                opt(l.cut),
                opt(l.discard),
                pct(l.spam_caught),
                pct(l.ham_to_spam),
                pct(l.ham_discarded),
            ]
        })
        .collect();
    table::print(
        &[
            "LEVEL",
            "CUT",
            "DISCARD",
            "SPAM CAUGHT",
            "HAM TO SPAM",
            "HAM DISCARDED",
        ],
        &rows,
    );
    Ok(())
}

/// The ham and spam score histograms, with each level's cut and discard lines.
fn plot_svg(scores: &[(f64, bool)], levels: &[LevelReport]) -> String {
    let pick = |spam: bool| -> Vec<f64> {
        scores
            .iter()
            .filter(|(_, is_spam)| *is_spam == spam)
            .map(|(score, _)| *score)
            .collect()
    };
    let series = [
        Series {
            label: "ham",
            colour: HAM_COLOUR,
            scores: pick(false),
        },
        Series {
            label: "spam",
            colour: SPAM_COLOUR,
            scores: pick(true),
        },
    ];
    let mut lines = Vec::new();
    for level in levels {
        for (value, kind) in [
            (level.cut, LineKind::Cut),
            (level.discard, LineKind::Discard),
        ] {
            if let Some(score) = value {
                lines.push(Line {
                    label: level.name.clone(),
                    score,
                    kind,
                    colour: "#555",
                });
            }
        }
    }
    histogram_svg("pampa eval: score distributions", &series, &lines)
}
