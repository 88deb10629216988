//! `pampa replay`: what would move if the spam levels were different.
//!
//! Every `mail.scored` event carries the message tags, the score and each recipient's
//! level as it was, so replay needs no SQL: it calls the same pure
//! [`pampa_schemas::decide`] as the live `score` stage with the proposed cut and discard,
//! and compares the result with the recorded disposition.

mod labels;
mod report;
mod rescore;

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use pampa_bus::{EventLog, StoredEvent};
use pampa_schemas::{
    decode, decode_head, decode_view, Disposition, Event, LevelSnapshot, MailAnalysis,
};
use pampa_stages::score::{fallback_level, seeded_levels};
use serde::Deserialize;
use serde_json::{json, Value};

use self::{
    labels::{Labels, FROM_FEEDBACK},
    report::{percent, rate, title, Confusion, CopyFacts, Recorded, Report, Rescored},
    rescore::Rescorer,
};
use crate::{
    config::Config,
    plot::{histogram_svg, Line, LineKind, Series, HAM_COLOUR, SPAM_COLOUR},
    table,
};

/// How often a long replay reports progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Events read ahead of the decoding.
const PREFETCH: usize = 4096;
/// How far before `--since` a rescore starts reading, to meet the score stage's input
/// events of the first scored messages.
const INPUT_LOOKBACK: Duration = Duration::from_secs(600);

#[derive(Args)]
pub struct ReplayArgs {
    /// Start of the range: a duration back from now (`24h`, `90m`) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    since: String,
    /// End of the range (default: now): a duration back from now or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    until: Option<String>,
    /// The proposed levels: `[levels.NAME]` tables with `cut` and `discard` (an absent key
    /// means never). Levels not in the file keep their recorded values; without the flag
    /// every level keeps them (to check determinism, or with --rescore).
    #[arg(long, value_name = "FILE.toml")]
    levels: Option<PathBuf>,
    /// Only this recipient's decisions.
    #[arg(long, value_name = "ADDR")]
    user: Option<String>,
    /// With --user: what if this user switched to level NAME (its cut and discard come
    /// from --levels if it has that level, else from the seeded levels).
    #[arg(long, value_name = "NAME", requires = "user")]
    to_level: Option<String>,
    /// Name the most affected users instead of only counting them.
    #[arg(long)]
    show_users: bool,
    /// `FILE.csv` with `message_id,ham|spam` lines (header optional), or `feedback` for
    /// the recipients' own verdicts (`pampa feedback`): adds spam caught and ham lost,
    /// for the old and the new settings.
    #[arg(long, value_name = "FILE.csv|feedback")]
    labels: Option<String>,
    /// Run the score stage again over the stored bodies (bodies that retention removed
    /// are counted and skipped), and diff the scores and rule hits against the recorded
    /// ones.
    #[arg(long)]
    rescore: bool,
    /// With --rescore: rule files or folders that take the place of `stages.score.rules`
    /// (loaded after the built-in rules, so they add rules and override scores). May be
    /// given more than once.
    #[arg(long, value_name = "DIR", requires = "rescore")]
    rules: Vec<PathBuf>,
    /// Draw the score distributions (ham and spam with --labels) with the old and new
    /// cut and discard lines, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// The part of a `mail.scored` event that a replay without rescore reads: decoding only
/// this skips the envelope details, the client and the evidence of `mail.received`.
#[derive(Deserialize)]
struct ScoredView {
    received: ReceivedView,
    #[serde(default)]
    tags: Vec<TagView>,
    #[serde(default)]
    recipients: Vec<RecipientView>,
    #[serde(default)]
    score: Option<f64>,
}

/// A tag's name only: the rule reads names, and evidence is the bulk of an event.
#[derive(Deserialize)]
struct TagView {
    name: String,
}

#[derive(Deserialize)]
struct RecipientView {
    address: String,
    #[serde(default)]
    tags: Vec<TagView>,
    #[serde(default)]
    level: Option<LevelSnapshot>,
    #[serde(default)]
    decision: Option<DecisionView>,
}

#[derive(Deserialize)]
struct DecisionView {
    disposition: Disposition,
}

impl ScoredView {
    /// The facts a replay compares against, borrowed from the view.
    fn recorded(&self) -> Recorded<'_> {
        Recorded {
            message_id: &self.received.message_id,
            header_id: self.received.header_message_id.as_deref(),
            tag_names: self.tags.iter().map(|t| t.name.as_str()).collect(),
            copies: self
                .recipients
                .iter()
                .map(|r| CopyFacts {
                    address: &r.address,
                    tag_names: r.tags.iter().map(|t| t.name.as_str()).collect(),
                    level: r.level.as_ref(),
                    old: r.decision.as_ref().map(|d| d.disposition),
                })
                .collect(),
            score: self.score.unwrap_or(0.0),
        }
    }
}

#[derive(Deserialize)]
struct ReceivedView {
    message_id: String,
    #[serde(default)]
    header_message_id: Option<String>,
}

/// One level's proposed limits, as written in the levels file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    cut: Option<f64>,
    discard: Option<f64>,
}

/// The levels file: only `[levels.NAME]` tables, so a typo is an error, not a no-op.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelsFile {
    #[serde(default)]
    levels: BTreeMap<String, Limits>,
}

fn load_levels(path: &Path) -> Result<BTreeMap<String, Limits>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: LevelsFile =
        toml::from_str(&text).with_context(|| format!("bad levels file {}", path.display()))?;
    for (name, limits) in &file.levels {
        for (key, value) in [("cut", limits.cut), ("discard", limits.discard)] {
            if let Some(v) = value.filter(|v| !v.is_finite()) {
                bail!(
                    "{}: levels.{name}.{key} = {v} is not a finite number",
                    path.display()
                );
            }
        }
    }
    Ok(file.levels)
}

/// Parses `24h` (back from `now`) or an RFC 3339 time; `what` names the flag in errors.
pub(crate) fn parse_time(value: &str, now: DateTime<Utc>, what: &str) -> Result<DateTime<Utc>> {
    if let Ok(age) = humantime::parse_duration(value) {
        let age = chrono::Duration::from_std(age)
            .with_context(|| format!("{what} {value:?} is too long ago"))?;
        return Ok(now - age);
    }
    match DateTime::parse_from_rfc3339(value) {
        Ok(at) => Ok(at.with_timezone(&Utc)),
        Err(_) => bail!(
            "{what} {value:?} is neither a duration (24h, 90m) nor an RFC 3339 time \
             (2026-01-31T12:00:00Z)"
        ),
    }
}

/// How a recipient's new level is chosen.
pub struct Proposal {
    /// The levels file's levels, by name.
    levels: BTreeMap<String, LevelSnapshot>,
    /// `--user ADDR --to-level NAME`: this level replaces the recorded one.
    to_level: Option<LevelSnapshot>,
    /// The live stage's level for copies recorded without one.
    fallback: LevelSnapshot,
}

impl Proposal {
    fn new(levels: &BTreeMap<String, Limits>, to_level: Option<LevelSnapshot>) -> Proposal {
        let levels = levels
            .iter()
            .map(|(name, limits)| {
                let level = LevelSnapshot {
                    name: name.clone(),
                    cut: limits.cut,
                    discard: limits.discard,
                };
                (name.clone(), level)
            })
            .collect();
        Proposal {
            levels,
            to_level,
            fallback: fallback_level(),
        }
    }

    /// The level a copy recorded at `recorded` is decided with now.
    pub fn level_for<'a>(&'a self, recorded: &'a LevelSnapshot) -> &'a LevelSnapshot {
        if let Some(level) = &self.to_level {
            return level;
        }
        self.levels.get(&recorded.name).unwrap_or(recorded)
    }

    /// The level of a copy recorded without one.
    pub fn fallback(&self) -> &LevelSnapshot {
        &self.fallback
    }
}

/// The level `--to-level NAME` names: from the levels file, else the seeded levels.
fn target_level(name: &str, levels: &BTreeMap<String, Limits>) -> Result<LevelSnapshot> {
    if let Some(limits) = levels.get(name) {
        return Ok(LevelSnapshot {
            name: name.to_owned(),
            cut: limits.cut,
            discard: limits.discard,
        });
    }
    let seeded = seeded_levels();
    match seeded.iter().find(|l| l.name == name) {
        Some(level) => Ok(level.clone()),
        None => {
            let known: Vec<&str> = seeded.iter().map(|l| l.name.as_str()).collect();
            bail!(
                "--to-level {name:?} is neither in the levels file nor a seeded level ({})",
                known.join(", ")
            )
        }
    }
}

/// Replays `mail.scored` in a range under the proposed levels (and, with --rescore, the
/// candidate rules) and prints what would move.
pub async fn replay(config: &Config, args: &ReplayArgs) -> Result<()> {
    let now = Utc::now();
    let since = parse_time(&args.since, now, "--since")?;
    let until = match &args.until {
        Some(value) => parse_time(value, now, "--until")?,
        None => now,
    };
    if until < since {
        bail!(
            "--until {} is before --since {}",
            until.to_rfc3339(),
            since.to_rfc3339()
        );
    }
    let levels = match &args.levels {
        Some(path) => load_levels(path)?,
        None => BTreeMap::new(),
    };
    let to_level = match &args.to_level {
        Some(name) => Some(target_level(name, &levels)?),
        None => None,
    };
    let proposal = Proposal::new(&levels, to_level);
    let mut rescorer = if args.rescore {
        Some(Rescorer::new(&config.stages.score, &args.rules)?)
    } else {
        None
    };

    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let labels = match args.labels.as_deref() {
        Some(FROM_FEEDBACK) => Some(Labels::from_feedback(&log, since).await?),
        Some(path) => Some(Labels::from_csv(Path::new(path))?),
        None => None,
    };
    if let Some(labels) = &labels {
        if labels.len() == 0 {
            eprintln!("replay: no labels found; the confusion tables will be empty");
        }
    }

    let mut replay = Replayer {
        args,
        proposal: &proposal,
        labels: labels.as_ref(),
        report: Report::default(),
        seen: HashSet::new(),
        seen_other: HashSet::new(),
        since,
        until,
    };
    let started = Instant::now();
    let mut last_progress = started;
    let mut read = 0usize;
    let mut progress = |read: usize, report: &Report| {
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "replay: {read} events read, {} decisions, {:.0}s",
                report.decisions,
                started.elapsed().as_secs_f64()
            );
        }
    };
    match rescorer.as_mut() {
        None => {
            // Reading (SQLite or the network) runs in its own task, ahead of the
            // decoding and deciding here, so the two overlap on two cores.
            let mut stream = log.replay_stream(MailAnalysis::EVENT_TYPE, since);
            let (tx, mut rx) = tokio::sync::mpsc::channel(PREFETCH);
            let reader = tokio::spawn(async move {
                while let Some(event) = stream.next().await {
                    let failed = event.is_err();
                    if tx.send(event).await.is_err() || failed {
                        break;
                    }
                }
            });
            while let Some(event) = rx.recv().await {
                replay.recorded(&event?)?;
                read += 1;
                progress(read, &replay.report);
            }
            reader.await.context("the log reader failed")?;
        }
        Some(rescorer) => {
            // The score stage's input events come before its output in the log.
            let lookback = chrono::Duration::from_std(INPUT_LOOKBACK).unwrap_or_default();
            let mut stream = log.replay_stream("mail.>", since - lookback);
            while let Some(event) = stream.next().await {
                replay.rescored(&log, rescorer, &event?).await?;
                read += 1;
                progress(read, &replay.report);
            }
        }
    }
    let report = replay.report;
    if started.elapsed() >= PROGRESS_EVERY {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "replay: {} decisions in {secs:.1}s ({:.0} per second)",
            report.decisions,
            report.decisions as f64 / secs
        );
    }

    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&report, &proposal, args))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !args.json {
            println!("Plot written to {}.", path.display());
        }
    }
    if args.json {
        print_json(&report, args, labels.is_some(), rescorer.as_ref())
    } else {
        print_tables(&report, args, labels.is_some(), since, until);
        if let Some(rescorer) = &rescorer {
            println!();
            rescorer.print();
        }
        Ok(())
    }
}

/// One replay's inputs and counts.
struct Replayer<'a> {
    args: &'a ReplayArgs,
    proposal: &'a Proposal,
    labels: Option<&'a Labels>,
    report: Report,
    /// A redelivered score stage may record one message twice; each counts once.
    /// Message ids are UUIDs, kept as numbers: no allocation per event.
    seen: HashSet<u128>,
    /// Ids that are not UUIDs (from elsewhere), kept as they are.
    seen_other: HashSet<String>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Replayer<'_> {
    /// Whether this message is met for the first time.
    fn first_time(&mut self, message_id: &str) -> bool {
        match uuid::Uuid::try_parse(message_id) {
            Ok(id) => self.seen.insert(id.as_u128()),
            Err(_) => self.seen_other.insert(message_id.to_owned()),
        }
    }

    fn in_range(&self, event: &StoredEvent) -> bool {
        // Log order and clock order may differ by a few milliseconds, so an event past
        // `until` is skipped, not taken as the end.
        event.published_at >= self.since && event.published_at <= self.until
    }

    /// A `mail.scored` event, replayed as recorded.
    fn recorded(&mut self, event: &StoredEvent) -> Result<()> {
        if !self.in_range(event) {
            return Ok(());
        }
        let view = decode_view::<MailAnalysis, ScoredView>(&event.payload)
            .with_context(|| format!("cannot decode mail.scored event {}", event.id))?
            .payload;
        if !self.first_time(&view.received.message_id) {
            return Ok(());
        }
        self.report.events += 1;
        let recorded = view.recorded();
        self.report.add(
            &recorded,
            None,
            self.proposal,
            self.args.user.as_deref(),
            self.labels,
            self.args.plot.is_some(),
        );
        Ok(())
    }

    /// Any mail event, for a rescore: inputs are remembered, scored events rescored.
    async fn rescored(
        &mut self,
        log: &EventLog,
        rescorer: &mut Rescorer,
        event: &StoredEvent,
    ) -> Result<()> {
        let head = decode_head(&event.payload)
            .with_context(|| format!("cannot decode event {}", event.id))?;
        if head.event_type != MailAnalysis::EVENT_TYPE {
            if head.event_type == "mail.received"
                || (pampa_schemas::ANALYSIS_EVENT_TYPES.contains(&head.event_type.as_str())
                    && head.event_type != pampa_schemas::RECOVERED_EVENT_TYPE)
            {
                let lookback = chrono::Duration::from_std(INPUT_LOOKBACK).unwrap_or_default();
                rescorer.note_input(
                    &head.event_type,
                    &head.id,
                    &event.payload,
                    event.published_at,
                    lookback,
                )?;
            }
            return Ok(());
        }
        if !self.in_range(event) {
            return Ok(());
        }
        let analysis = decode::<MailAnalysis>(&event.payload)
            .with_context(|| format!("cannot decode mail.scored event {}", event.id))?
            .payload;
        if !self.first_time(&analysis.received.message_id) {
            return Ok(());
        }
        // A --user replay rescores only that user's mail.
        if let Some(user) = &self.args.user {
            if !analysis
                .recipients
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(user))
            {
                return Ok(());
            }
        }
        let Some((tags, score)) = rescorer
            .rescore(log, head.causation_id.as_deref(), &analysis)
            .await?
        else {
            return Ok(());
        };
        self.report.events += 1;
        // The recorded facts, read the same way as without a rescore.
        let view = decode_view::<MailAnalysis, ScoredView>(&event.payload)
            .with_context(|| format!("cannot decode mail.scored event {}", event.id))?
            .payload;
        let recorded = view.recorded();
        let rescored = Rescored {
            tag_names: tags.iter().map(|t| t.name.as_str()).collect(),
            score,
        };
        self.report.add(
            &recorded,
            Some(&rescored),
            self.proposal,
            self.args.user.as_deref(),
            self.labels,
            self.args.plot.is_some(),
        );
        Ok(())
    }
}

/// The SVG of `--plot`: the (new) score distributions, ham and spam apart when labelled,
/// with each level's recorded lines in grey and the proposed ones in black.
fn plot(report: &Report, proposal: &Proposal, args: &ReplayArgs) -> String {
    let pick = |label: Option<bool>| -> Vec<f64> {
        report
            .points
            .iter()
            .filter(|p| p.is_spam == label)
            .map(|p| p.new)
            .collect()
    };
    let mut series = Vec::new();
    for (label, name, colour) in [
        (Some(false), "ham", HAM_COLOUR),
        (Some(true), "spam", SPAM_COLOUR),
        (None, "unlabelled", "#777"),
    ] {
        let scores = pick(label);
        if !scores.is_empty() {
            series.push(Series {
                label: name,
                colour,
                scores,
            });
        }
    }
    if args.rescore {
        series.push(Series {
            label: "all, as recorded",
            colour: "#bbb",
            scores: report.points.iter().map(|p| p.old).collect(),
        });
    }
    let mut lines = Vec::new();
    let mut push = |name: &str, level: &LevelSnapshot, colour: &'static str| {
        for (value, kind, what) in [
            (level.cut, LineKind::Cut, "cut"),
            (level.discard, LineKind::Discard, "discard"),
        ] {
            if let Some(score) = value {
                lines.push(Line {
                    label: format!("{name} {what}"),
                    score,
                    kind,
                    colour,
                });
            }
        }
    };
    for recorded in report.recorded_levels() {
        let name = &recorded.name;
        let proposed = proposal.level_for(recorded);
        if proposed == recorded {
            push(name, recorded, "#555");
        } else {
            push(&format!("{name} (old)"), recorded, "#aaa");
            push(&format!("{} (new)", proposed.name), proposed, "#000");
        }
    }
    let title = match (args.rescore, &args.user) {
        (true, _) => "pampa replay --rescore: new score distributions",
        (false, Some(_)) => "pampa replay --user: score distribution",
        (false, None) => "pampa replay: score distributions",
    };
    histogram_svg(title, &series, &lines)
}

fn print_json(
    report: &Report,
    args: &ReplayArgs,
    with_labels: bool,
    rescorer: Option<&Rescorer>,
) -> Result<()> {
    if report.decisions == 0 {
        eprintln!("no scored mail in this range");
    }
    let per_level = report.per_level();
    let moves: Vec<Value> = report
        .moved()
        .into_iter()
        .map(|(level, stat)| {
            json!({
                "level": level,
                "from": stat.from.as_str(),
                "to": stat.to.as_str(),
                "count": stat.count,
                "percent": 100.0 * rate(stat.count, per_level.get(level).copied().unwrap_or(0)),
                "samples": stat.samples,
            })
        })
        .collect();
    let mut out = json!({
        "decisions": report.decisions,
        "moves": moves,
        "messages": report.events,
        "levels": per_level,
        "affected_users": report.users.len(),
    });
    if let Some(map) = out.as_object_mut() {
        if let Some(name) = &args.to_level {
            map.insert("to_level".into(), json!(name));
        }
        if args.show_users {
            let users: Vec<Value> = report
                .top_users()
                .into_iter()
                .map(|(address, moved)| json!({ "address": address, "moved": moved }))
                .collect();
            map.insert("users".into(), json!(users));
        }
        if with_labels {
            map.insert(
                "labels".into(),
                json!({
                    "labelled_decisions": report.labelled,
                    "old": report.old.json(),
                    "new": report.new.json(),
                }),
            );
        }
        if let Some(rescorer) = rescorer {
            map.insert("rescore".into(), rescorer.json());
        }
        if let Some(path) = &args.plot {
            map.insert("plot".into(), json!(path));
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_tables(
    report: &Report,
    args: &ReplayArgs,
    with_labels: bool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) {
    let range = format!(
        "{} .. {}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if report.decisions == 0 {
        println!("no scored mail in this range ({range})");
        return;
    }
    println!(
        "{} decisions in {} messages, {range}",
        report.decisions, report.events
    );
    if let Some(name) = &args.to_level {
        println!(
            "as if {} used level {name}",
            args.user.as_deref().unwrap_or("")
        );
    }
    println!();
    let per_level = report.per_level();
    let rows: Vec<Vec<String>> = report
        .moved()
        .into_iter()
        .map(|(level, stat)| {
            let whole = per_level.get(level).copied().unwrap_or(0);
            vec![
                level.to_owned(),
                format!("{}→{}", title(stat.from), title(stat.to)),
                stat.count.to_string(),
                percent(stat.count, whole),
                stat.samples.join(" "),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no decision would move");
    } else {
        table::print(&["LEVEL", "MOVE", "COUNT", "OF LEVEL", "SAMPLE"], &rows);
    }
    println!();
    println!("{} users affected", report.users.len());
    if args.show_users && !report.users.is_empty() {
        let rows: Vec<Vec<String>> = report
            .top_users()
            .into_iter()
            .map(|(address, moved)| vec![address.to_owned(), moved.to_string()])
            .collect();
        table::print(&["USER", "MOVED"], &rows);
    }
    if with_labels {
        println!();
        println!("{} labelled decisions", report.labelled);
        let row = |name: &str, c: &Confusion| {
            vec![
                name.to_owned(),
                format!("{} ({})", c.spam_caught, percent(c.spam_caught, c.spam)),
                format!("{} ({})", c.ham_to_spam, percent(c.ham_to_spam, c.ham)),
                format!("{} ({})", c.ham_discarded, percent(c.ham_discarded, c.ham)),
            ]
        };
        table::print(
            &["SETTING", "SPAM CAUGHT", "HAM TO SPAM", "HAM DISCARDED"],
            &[row("old", &report.old), row("new", &report.new)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_ages_or_rfc3339() {
        let now = Utc::now();
        assert_eq!(
            parse_time("1h", now, "--since").ok(),
            Some(now - chrono::Duration::hours(1))
        );
        assert!(parse_time("2026-01-31T12:00:00Z", now, "--since").is_ok());
        let error = parse_time("yesterday", now, "--since")
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("yesterday")));
    }

    #[test]
    fn unknown_level_keys_are_named() {
        let error = toml::from_str::<LevelsFile>("[levels.normal]\ncutt = 3.0\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("cutt"), "{error}");
        let file: LevelsFile = toml::from_str("[levels.normal]\ncut = 4\n[levels.off]\n")
            .unwrap_or_else(|e| {
                panic!("{e}");
            });
        assert_eq!(file.levels["normal"].cut, Some(4.0));
        assert_eq!(file.levels["normal"].discard, None);
        assert_eq!(file.levels["off"].cut, None);
    }

    #[test]
    fn unchanged_levels_keep_the_recorded_ones() {
        let proposal = Proposal::new(&BTreeMap::new(), None);
        let normal = &seeded_levels()[1];
        assert_eq!(proposal.level_for(normal), normal);
    }
}
