//! `pampa sessions` and `pampa usage`: the access network's projections, rebuilt from the
//! `access.acct` events in the log by the same code the radius role keeps live.

use anyhow::{bail, Context, Result};
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use clap::Args;
use futures::StreamExt;
use pampa_bus::EventLog;
use pampa_radius::{acct_events, Sessions, UsageBuilder};

use crate::{config::Config, table};

#[derive(Args)]
pub struct SessionsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UsageArgs {
    /// The user: an address, or a bare name when `radius.default_realm` is set.
    #[arg(long, value_name = "ADDR")]
    user: String,
    /// The month, as YYYY-MM (default: this month, in UTC).
    #[arg(long, value_name = "YYYY-MM")]
    month: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

async fn open(config: &Config) -> Result<EventLog> {
    EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))
}

/// The oldest record that can still belong to an open session.
fn horizon(config: &Config, from: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    from - chrono::Duration::from_std(config.radius.max_session_age).unwrap_or_default()
}

/// Lists the sessions open now.
pub async fn sessions(config: &Config, args: &SessionsArgs) -> Result<()> {
    let log = open(config).await?;
    let mut projection = Sessions::with_default_realm(config.radius.default_realm.clone());
    let mut events = acct_events(&log, horizon(config, Utc::now()));
    while let Some(event) = events.next().await {
        projection.apply(&event?);
    }
    projection.expire(horizon(config, Utc::now()));
    let active = projection.active();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&active)?);
        return Ok(());
    }
    if active.is_empty() {
        println!("no open sessions");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = active
        .iter()
        .map(|s| {
            vec![
                s.user.clone(),
                s.nas_ip.clone(),
                s.session_id.clone().unwrap_or_default(),
                s.framed_ip.clone().unwrap_or_default(),
                s.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                s.session_time.map(|t| t.to_string()).unwrap_or_default(),
                s.input_octets.map(|t| t.to_string()).unwrap_or_default(),
                s.output_octets.map(|t| t.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &[
            "USER",
            "NAS",
            "SESSION",
            "IP",
            "STARTED",
            "SECONDS",
            "OCTETS IN",
            "OCTETS OUT",
        ],
        &rows,
    );
    println!("{} open sessions", active.len());
    Ok(())
}

/// `2026-11` as (year, month).
fn parse_month(text: &str) -> Result<(i32, u32)> {
    let parsed = text
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)))
        .filter(|(y, m)| (1970..=9999).contains(y) && (1..=12).contains(m));
    match parsed {
        Some(month) => Ok(month),
        None => bail!("--month {text:?} is not a month such as 2026-11"),
    }
}

/// Reports one user's time online and traffic in one month.
pub async fn usage(config: &Config, args: &UsageArgs) -> Result<()> {
    let (year, month) = match &args.month {
        Some(text) => parse_month(text)?,
        None => {
            let now = Utc::now();
            (now.year(), now.month())
        }
    };
    let start = NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Utc.from_utc_datetime(&d))
        .with_context(|| format!("{year}-{month:02} is not a month"))?;
    let log = open(config).await?;
    let mut builder = UsageBuilder::new(
        &args.user,
        config.radius.default_realm.as_deref(),
        year,
        month,
    );
    // Sessions open when the month began grow from their earlier records.
    let mut events = acct_events(&log, horizon(config, start));
    while let Some(event) = events.next().await {
        builder.add(&event?);
    }
    let usage = builder.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let hours = usage.time_online_seconds as f64 / 3600.0;
    table::print(
        &[
            "USER",
            "MONTH",
            "SESSIONS",
            "TIME ONLINE",
            "OCTETS IN",
            "OCTETS OUT",
        ],
        &[vec![
            usage.user.clone(),
            format!("{year}-{month:02}"),
            usage.sessions.to_string(),
            format!("{}s ({hours:.1} h)", usage.time_online_seconds),
            usage.input_octets.to_string(),
            usage.output_octets.to_string(),
        ]],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_checked() {
        assert_eq!(parse_month("2026-11").ok(), Some((2026, 11)));
        for bad in ["2026-13", "2026", "nov", "2026-0"] {
            let error = parse_month(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(bad), "{error}");
        }
    }
}
