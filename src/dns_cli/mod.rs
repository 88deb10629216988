//! `pampa dns reload|top|export`: the DNS role's operator commands.
//!
//! - `reload` asks the running process (through its metrics listener's `POST
//!   /-/reload`) to reload its zones, as SIGHUP does.
//! - `top` and `export` read the `dns.query` events from the log.

mod dnstap;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use pampa_bus::EventLog;
use pampa_schemas::{decode_queries, DnsQuery};
use serde_json::json;

use crate::{config::Config, replay::parse_time, table};

#[derive(Subcommand)]
pub enum DnsAction {
    /// Reload the zone files and DNSBL datasets of the running process (as SIGHUP
    /// does), without dropping queries; a broken file keeps its old zone serving.
    Reload,
    /// The top clients, names and response codes from the query log.
    Top {
        /// How far back (`1h`, `24h`, or an RFC 3339 time).
        #[arg(long, default_value = "1h", value_name = "AGE|TIME")]
        since: String,
        /// Rows per table.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Write the query log as a dnstap file (Frame Streams), for dnstap tools such as
    /// `dnstap-ldns -r FILE`.
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        dnstap: PathBuf,
        /// How far back (`1h`, `24h`, or an RFC 3339 time). Default: everything retained.
        #[arg(long, value_name = "AGE|TIME")]
        since: Option<String>,
    },
}

pub async fn dns(config: &Config, action: &DnsAction) -> Result<()> {
    match action {
        DnsAction::Reload => reload(config),
        DnsAction::Top { since, limit, json } => top(config, since, *limit, *json).await,
        DnsAction::Export { dnstap, since } => export(config, dnstap, since.as_deref()).await,
    }
}

/// `POST /-/reload` to the process's metrics listener; prints what it says.
fn reload(config: &Config) -> Result<()> {
    let address = &config.metrics.listen;
    let mut stream = TcpStream::connect(address).with_context(|| {
        format!("cannot reach the running pampa at {address} (metrics.listen); is it up?")
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "POST /-/reload HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("no answer to the reload request")?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" => {
            print!("{body}");
            Ok(())
        }
        "404" => bail!("the process at {address} runs no DNS role"),
        _ => bail!("reload failed: {}", body.trim()),
    }
}

async fn queries(
    config: &Config,
    since: chrono::DateTime<Utc>,
) -> Result<futures::stream::BoxStream<'static, Result<DnsQuery>>> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    Ok(log
        .replay_stream("dns.query", since)
        .map(|event| {
            let event = event?;
            let batch = decode_queries(&event.payload)
                .with_context(|| format!("cannot decode dns.query event {}", event.id))?
                .payload;
            Ok::<_, anyhow::Error>(futures::stream::iter(
                batch.iter().map(Ok).collect::<Vec<_>>(),
            ))
        })
        .try_flatten()
        .boxed())
}

/// The `limit` largest counts, largest first, ties by key.
fn ranked(counts: HashMap<String, u64>, limit: usize) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    rows
}

async fn top(config: &Config, since: &str, limit: usize, json: bool) -> Result<()> {
    let since = parse_time(since, Utc::now(), "--since")?;
    let mut stream = queries(config, since).await?;
    let (mut clients, mut names, mut rcodes, mut kinds) = (
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
    );
    let mut total = 0u64;
    while let Some(query) = stream.next().await {
        let query = query?;
        total += 1;
        *clients.entry(query.client_ip).or_insert(0u64) += 1;
        *names
            .entry(format!("{} {}", query.qname, query.qtype))
            .or_insert(0u64) += 1;
        *rcodes.entry(query.rcode).or_insert(0u64) += 1;
        *kinds
            .entry(query.zone_kind.as_str().to_owned())
            .or_insert(0u64) += 1;
    }
    let (clients, names, rcodes, kinds) = (
        ranked(clients, limit),
        ranked(names, limit),
        ranked(rcodes, limit),
        ranked(kinds, limit),
    );
    if json {
        let rows = |rows: &[(String, u64)], key: &str| -> Vec<serde_json::Value> {
            rows.iter()
                .map(|(k, n)| json!({ key: k, "queries": n }))
                .collect()
        };
        let out = json!({
            "since": since,
            "queries": total,
            "clients": rows(&clients, "client"),
            "names": rows(&names, "name"),
            "rcodes": rows(&rcodes, "rcode"),
            "zone_kinds": rows(&kinds, "zone_kind"),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{total} queries since {}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for (title, rows) in [
        ("CLIENT", &clients),
        ("NAME", &names),
        ("RCODE", &rcodes),
        ("ANSWERED BY", &kinds),
    ] {
        if rows.is_empty() {
            continue;
        }
        println!();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string(), report_share(*n, total)])
            .collect();
        table::print(&[title, "QUERIES", "SHARE"], &rows);
    }
    Ok(())
}

fn report_share(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", 100.0 * part as f64 / whole as f64)
}

async fn export(config: &Config, path: &PathBuf, since: Option<&str>) -> Result<()> {
    let since = match since {
        Some(value) => parse_time(value, Utc::now(), "--since")?,
        None => chrono::DateTime::UNIX_EPOCH,
    };
    let mut stream = queries(config, since).await?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = dnstap::Writer::new(std::io::BufWriter::new(file))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 0u64;
    while let Some(query) = stream.next().await {
        writer
            .write(&query?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    writer
        .finish()
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("Wrote {written} queries to {} (dnstap).", path.display());
    Ok(())
}
