//! `pampa replay`: what would move if the spam levels were different.
//!
//! Every `mail.scored` event carries the message tags, the score and each recipient's
//! level as it was, so replay needs no SQL: it calls the same pure
//! [`pampa_schemas::decide`] as the live `score` stage with the proposed cut and discard,
//! and compares the result with the recorded disposition.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use pampa_bus::EventLog;
use pampa_schemas::{decide, decode, Disposition, LevelSnapshot, MailAnalysis};
use pampa_stages::score::{fallback_level, seeded_levels};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{config::Config, table};

/// How many message ids are kept per move, as examples to `pampa trace`.
const SAMPLES_PER_MOVE: usize = 5;
/// How many users `--show-users` lists.
const TOP_USERS: usize = 10;
/// How often a long replay reports progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct ReplayArgs {
    /// Start of the range: a duration back from now (`24h`, `90m`) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    since: String,
    /// End of the range (default: now): a duration back from now or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    until: Option<String>,
    /// The proposed levels: `[levels.NAME]` tables with `cut` and `discard` (an absent key
    /// means never). Levels not in the file keep their recorded values.
    #[arg(long, value_name = "FILE.toml")]
    levels: PathBuf,
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
    /// `message_id,ham|spam` lines (header optional): adds spam caught and ham lost, for
    /// the old and the new settings.
    #[arg(long, value_name = "FILE.csv")]
    labels: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
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
fn parse_time(value: &str, now: DateTime<Utc>, what: &str) -> Result<DateTime<Utc>> {
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

/// Reads `message_id,ham|spam` lines into a map where `true` means spam.
fn load_labels(path: &Path) -> Result<HashMap<String, bool>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut labels = HashMap::new();
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
        labels.insert(bare_id(id).to_owned(), is_spam);
    }
    Ok(labels)
}

/// A `Message-ID` header without its angle brackets, so both spellings match.
fn bare_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Labelled decisions under one setting.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Confusion {
    spam: usize,
    ham: usize,
    spam_caught: usize,
    ham_to_spam: usize,
    ham_discarded: usize,
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

    fn json(&self) -> Value {
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

fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// One move (or a non-move when `from == to`) within one level.
struct MoveStat {
    from: Disposition,
    to: Disposition,
    count: usize,
    samples: Vec<String>,
}

/// Everything a replay counts.
#[derive(Default)]
struct Report {
    events: usize,
    decisions: usize,
    /// Decisions per recorded level name.
    per_level: BTreeMap<String, usize>,
    /// Keyed by (recorded level name, old rank, new rank), stay-puts included; ranks
    /// because `Disposition` has no order of its own.
    moves: BTreeMap<(String, u8, u8), MoveStat>,
    /// Moved decisions per recipient.
    users: HashMap<String, usize>,
    old: Confusion,
    new: Confusion,
    labelled: usize,
}

/// How a recipient's new level is chosen.
struct Proposal {
    levels: BTreeMap<String, Limits>,
    /// `--user ADDR --to-level NAME`: this level replaces the recorded one.
    to_level: Option<LevelSnapshot>,
}

impl Proposal {
    fn level_for(&self, recorded: &LevelSnapshot) -> LevelSnapshot {
        if let Some(level) = &self.to_level {
            return level.clone();
        }
        match self.levels.get(&recorded.name) {
            Some(limits) => LevelSnapshot {
                name: recorded.name.clone(),
                cut: limits.cut,
                discard: limits.discard,
            },
            None => recorded.clone(),
        }
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

impl Report {
    fn add(
        &mut self,
        analysis: &MailAnalysis,
        proposal: &Proposal,
        user: Option<&str>,
        labels: Option<&HashMap<String, bool>>,
    ) {
        let score = analysis.score.unwrap_or(0.0);
        let message_id = &analysis.received.message_id;
        let label = labels.and_then(|labels| {
            labels.get(message_id.as_str()).copied().or_else(|| {
                let header = analysis.received.header_message_id.as_deref()?;
                labels.get(bare_id(header)).copied()
            })
        });
        for recipient in &analysis.recipients {
            if user.is_some_and(|u| !recipient.address.eq_ignore_ascii_case(u)) {
                continue;
            }
            // A copy the score stage did not decide on has nothing to compare with.
            let Some(old) = recipient.decision.as_ref().map(|d| d.disposition) else {
                continue;
            };
            // The same fallback as the live stage, for events without a recorded level.
            let recorded = recipient.level.clone().unwrap_or_else(fallback_level);
            let level = proposal.level_for(&recorded);
            let new = decide(&analysis.tags, &recipient.tags, score, &level).disposition;
            self.decisions += 1;
            *self.per_level.entry(recorded.name.clone()).or_default() += 1;
            let stat = self
                .moves
                .entry((recorded.name, rank(old), rank(new)))
                .or_insert_with(|| MoveStat {
                    from: old,
                    to: new,
                    count: 0,
                    samples: Vec::new(),
                });
            stat.count += 1;
            if old != new {
                if stat.samples.len() < SAMPLES_PER_MOVE && !stat.samples.contains(message_id) {
                    stat.samples.push(message_id.clone());
                }
                *self.users.entry(recipient.address.clone()).or_default() += 1;
            }
            if let Some(is_spam) = label {
                self.labelled += 1;
                self.old.add(is_spam, old);
                self.new.add(is_spam, new);
            }
        }
    }

    /// The moves proper, in a stable order.
    fn moved(&self) -> impl Iterator<Item = (&str, &MoveStat)> {
        self.moves
            .iter()
            .filter(|(_, stat)| stat.from != stat.to)
            .map(|((level, _, _), stat)| (level.as_str(), stat))
    }

    fn top_users(&self) -> Vec<(&str, usize)> {
        let mut users: Vec<(&str, usize)> =
            self.users.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        users.truncate(TOP_USERS);
        users
    }
}

fn percent(part: usize, whole: usize) -> String {
    format!("{:.1}%", 100.0 * rate(part, whole))
}

/// Replays `mail.scored` in a range under the proposed levels and prints what would move.
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
    let levels = load_levels(&args.levels)?;
    let to_level = match &args.to_level {
        Some(name) => Some(target_level(name, &levels)?),
        None => None,
    };
    let proposal = Proposal { levels, to_level };
    let labels = match &args.labels {
        Some(path) => Some(load_labels(path)?),
        None => None,
    };

    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let events = log.replay("mail.scored", since).await?;
    let total = events.len();
    let started = Instant::now();
    let mut last_progress = started;
    let mut report = Report::default();
    // A redelivered score stage may record one message twice; each counts once.
    let mut seen: HashSet<String> = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        // Not `break`: log order and clock order may differ by a few milliseconds.
        if event.published_at > until {
            continue;
        }
        let analysis = decode::<MailAnalysis>(&event.payload)
            .with_context(|| format!("cannot decode mail.scored event {}", event.id))?
            .payload;
        if !seen.insert(analysis.received.message_id.clone()) {
            continue;
        }
        report.events += 1;
        report.add(&analysis, &proposal, args.user.as_deref(), labels.as_ref());
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "replay: {} of {total} events, {} decisions",
                index + 1,
                report.decisions
            );
        }
    }
    if total > 0 && started.elapsed() >= PROGRESS_EVERY {
        eprintln!(
            "replay: {} decisions in {:.1}s",
            report.decisions,
            started.elapsed().as_secs_f64()
        );
    }

    if args.json {
        print_json(&report, args, labels.is_some())
    } else {
        print_tables(&report, args, labels.is_some(), since, until);
        Ok(())
    }
}

fn print_json(report: &Report, args: &ReplayArgs, with_labels: bool) -> Result<()> {
    if report.decisions == 0 {
        eprintln!("no scored mail in this range");
    }
    let moves: Vec<Value> = report
        .moved()
        .map(|(level, stat)| {
            json!({
                "level": level,
                "from": stat.from.as_str(),
                "to": stat.to.as_str(),
                "count": stat.count,
                "percent": 100.0 * rate(stat.count, report.per_level.get(level).copied().unwrap_or(0)),
                "samples": stat.samples,
            })
        })
        .collect();
    let mut out = json!({
        "decisions": report.decisions,
        "moves": moves,
        "messages": report.events,
        "levels": report.per_level,
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
    let rows: Vec<Vec<String>> = report
        .moved()
        .map(|(level, stat)| {
            let whole = report.per_level.get(level).copied().unwrap_or(0);
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
fn title(disposition: Disposition) -> &'static str {
    match disposition {
        Disposition::Inbox => "Inbox",
        Disposition::Spam => "Spam",
        Disposition::Quarantine => "Quarantine",
        Disposition::Discard => "Discard",
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
        let proposal = Proposal {
            levels: BTreeMap::new(),
            to_level: None,
        };
        let normal = &seeded_levels()[1];
        assert_eq!(&proposal.level_for(normal), normal);
    }
}
