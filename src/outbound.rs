//! The operator's commands for outbound mail: a user's sender aliases, limits and
//! flag (`pampa user alias|limits|flagged|unflag`), DKIM keys (`pampa dkim`), and the
//! relay's queue (`pampa queue`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{TimeZone, Utc};
use clap::Subcommand;
use pampa_bus::EventLog;
use pampa_directory::{Directory, DkimKey, QueueEntry};
use pampa_relay::dkim::{self, DkimAlgorithm};

use crate::{config::Config, table};

/// `pampa user alias …`.
#[derive(Subcommand)]
pub enum AliasAction {
    /// Let a user send as another address too (envelope sender and From:).
    Add {
        /// The user.
        address: String,
        /// The address they may also send as.
        alias: String,
    },
    /// Take an alias away.
    Remove {
        /// The user.
        address: String,
        /// The alias.
        alias: String,
    },
    /// List the addresses a user may send as.
    List {
        /// The user.
        address: String,
    },
}

/// `pampa user limits ADDR …`.
#[derive(clap::Args)]
pub struct LimitsArgs {
    /// The user.
    address: String,
    /// Most messages an hour (0: no limit; to stop a user sending, see `pampa user
    /// flagged` and the relay's hold).
    #[arg(long, value_name = "N")]
    messages_per_hour: Option<u32>,
    /// Most recipients an hour (0: no limit).
    #[arg(long, value_name = "N")]
    recipients_per_hour: Option<u32>,
    /// Back to the defaults of [submission].
    #[arg(long, conflicts_with_all = ["messages_per_hour", "recipients_per_hour"])]
    default: bool,
}

async fn directory(config: &Config) -> Result<Directory> {
    Directory::connect(&config.db_url())
        .await
        .context("cannot open the directory database")
}

fn when(unix: i64) -> String {
    Utc.timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// `pampa user alias …`.
pub async fn alias(config: &Config, action: AliasAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        AliasAction::Add { address, alias } => {
            dir.add_sender_alias(&address, &alias).await?;
            println!("{address} may now send as {alias}.");
        }
        AliasAction::Remove { address, alias } => {
            dir.remove_sender_alias(&address, &alias).await?;
            println!("{address} may no longer send as {alias}.");
        }
        AliasAction::List { address } => {
            let rows: Vec<Vec<String>> = dir
                .sender_aliases(&address)
                .await?
                .into_iter()
                .map(|a| vec![a])
                .collect();
            table::print(&["ALIAS"], &rows);
        }
    }
    Ok(())
}

/// `pampa user limits ADDR …`: sets them, or shows them with no option.
pub async fn limits(config: &Config, args: LimitsArgs) -> Result<()> {
    let dir = directory(config).await?;
    if args.default {
        dir.set_outbound_limits(&args.address, None, None).await?;
        println!("{} is back on the default limits.", args.address);
        return Ok(());
    }
    if args.messages_per_hour.is_some() || args.recipients_per_hour.is_some() {
        let current = dir.outbound_profile(&args.address).await?;
        dir.set_outbound_limits(
            &args.address,
            args.messages_per_hour.or(current.messages_per_hour),
            args.recipients_per_hour.or(current.recipients_per_hour),
        )
        .await?;
        println!("Changed the sending limits of {}.", args.address);
    }
    let profile = dir.outbound_profile(&args.address).await?;
    let defaults = &config.submission;
    let shown = |own: Option<u32>, default: u32| match own {
        Some(n) => n.to_string(),
        None => format!("{default} (default)"),
    };
    table::print(
        &["LIMIT", "PER HOUR"],
        &[
            vec![
                "messages".into(),
                shown(profile.messages_per_hour, defaults.messages_per_hour),
            ],
            vec![
                "recipients".into(),
                shown(profile.recipients_per_hour, defaults.recipients_per_hour),
            ],
        ],
    );
    if let Some(flag) = profile.flag {
        println!("Flagged since {}: {}", when(flag.flagged_at), flag.reason);
    }
    Ok(())
}

/// `pampa user flagged`: the users whose outbound mail scored as spam.
pub async fn flagged(config: &Config, json: bool) -> Result<()> {
    let flags = directory(config).await?.flagged_senders().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&flags)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = flags
        .into_iter()
        .map(|f| {
            vec![
                f.address,
                when(f.flagged_at),
                f.message_id.unwrap_or_else(|| "-".into()),
                f.reason,
            ]
        })
        .collect();
    table::print(&["USER", "FLAGGED AT", "MESSAGE", "REASON"], &rows);
    Ok(())
}

/// `pampa user unflag ADDR`.
pub async fn unflag(config: &Config, address: &str) -> Result<()> {
    if directory(config).await?.unflag_sender(address).await? {
        println!("{address} is no longer flagged and may send again.");
    } else {
        println!("{address} was not flagged.");
    }
    Ok(())
}

/// `pampa dkim …`.
#[derive(Subcommand)]
pub enum DkimAction {
    /// Make a new signing key for a domain, store it, and print the DNS TXT record to
    /// publish. A domain's first key is used at once. A domain that has a key gets this
    /// one as its next key: publish the record, wait for its TTL, then `pampa dkim
    /// activate`; until then the relay signs with the current key, so no mail goes out
    /// with a signature receivers cannot check.
    Generate {
        /// The domain (the From: domain of the mail to sign).
        domain: String,
        /// The selector; by default one from the date (`pYYYYMM`), so a new key never
        /// reuses the name of a record resolvers still cache.
        #[arg(long)]
        selector: Option<String>,
        /// rsa (2048 bits, what every verifier reads) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// Also write the record into this zone of the DNS role (a `[[dns.zones]]`
        /// name; its file gets the record, then `pampa dns reload`).
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
        /// Replace the current key at once instead of making a next one (mail signed
        /// before the record is visible fails DKIM).
        #[arg(long)]
        now: bool,
    },
    /// Make a domain's next key (from `generate`) the one the relay signs with.
    Activate {
        /// The domain.
        domain: String,
    },
    /// Print a domain's selector and TXT record again.
    Show {
        /// The domain.
        domain: String,
    },
}

/// `pampa dkim …`.
pub async fn dkim(config: &Config, action: DkimAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        DkimAction::Generate {
            domain,
            selector,
            algorithm,
            zone,
            now,
        } => {
            let algorithm: DkimAlgorithm = algorithm.parse()?;
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if !dir.is_local_domain(&domain).await? {
                bail!(
                    "{domain} is not a local domain; add it first with `pampa domain add {domain}`"
                );
            }
            let selector = selector.unwrap_or_else(|| Utc::now().format("p%Y%m").to_string());
            let key = dkim::generate(algorithm)?;
            // Signing with it once proves the key and the names before anything is stored.
            dkim::Signer::new(&domain, &selector, algorithm.as_str(), &key.private_key_pem)?;
            let stored = DkimKey {
                domain: domain.clone(),
                selector: selector.clone(),
                algorithm: algorithm.as_str().to_owned(),
                private_key_pem: key.private_key_pem.clone(),
                created_at: Utc::now().timestamp(),
            };
            let owner = format!("{selector}._domainkey.{domain}");
            // A zone that cannot take the record is refused before any key is stored.
            if let Some(zone) = &zone {
                zone_file(config, zone, &owner)?;
            }
            let current = dir.dkim_key(&domain).await?;
            if current.as_ref().is_some_and(|c| c.selector == selector) {
                bail!("{domain} signs with selector {selector} now; a new key needs a new selector");
            }
            let next = current.is_some() && !now;
            if next {
                dir.put_next_dkim_key(&stored).await?;
            } else {
                dir.put_dkim_key(&stored).await?;
            }
            let record = dkim::txt_record(algorithm.as_str(), &key.public_key_b64);
            if next {
                println!(
                    "Stored {domain}'s next {} key, selector {selector}; the relay still signs with the current one.",
                    algorithm.as_str()
                );
            } else {
                println!(
                    "Stored a new {} key for {domain}, selector {selector}; the relay signs with it now.",
                    algorithm.as_str()
                );
            }
            println!("Publish this TXT record:");
            println!("{owner}. IN TXT {}", quoted_strings(&record));
            if let Some(zone) = zone {
                let file = write_zone_record(config, &zone, &owner, &record)?;
                println!(
                    "Wrote it into zone {zone} ({}); run `pampa dns reload` to serve it, and raise the SOA serial if secondaries copy the zone.",
                    file.display()
                );
            }
            if next {
                println!("Once the record is visible (after its TTL): pampa dkim activate {domain}");
            }
        }
        DkimAction::Activate { domain } => match dir.activate_dkim_key(&domain).await? {
            Some(key) => println!(
                "{} now signs with selector {}. Keep the old selector's TXT record for a few days: mail in flight still carries it.",
                key.domain, key.selector
            ),
            None => bail!("{domain} has no next key; make one with `pampa dkim generate {domain}`"),
        },
        DkimAction::Show { domain } => {
            let current = dir.dkim_key(&domain).await?;
            let next = dir.next_dkim_key(&domain).await?;
            if current.is_none() && next.is_none() {
                bail!("{domain} has no DKIM key; make one with `pampa dkim generate {domain}`");
            }
            for (what, key) in [("current", current), ("next", next)] {
                let Some(key) = key else { continue };
                let public = dkim::public_key_b64(&key.algorithm, &key.private_key_pem)?;
                let record = dkim::txt_record(&key.algorithm, &public);
                println!(
                    "{}._domainkey.{}. IN TXT {}   ; {what}",
                    key.selector,
                    key.domain,
                    quoted_strings(&record)
                );
            }
        }
    }
    Ok(())
}

/// A TXT value as master-file strings of at most 255 octets each (RFC 1035 §3.3.14):
/// an RSA key's record is longer than one string may be.
fn quoted_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file of a configured zone that `owner` lies in.
fn zone_file<'c>(config: &'c Config, zone: &str, owner: &str) -> Result<&'c Path> {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let Some(found) = config
        .dns
        .zones
        .iter()
        .find(|z| z.name.trim_end_matches('.').eq_ignore_ascii_case(&zone))
    else {
        bail!("no zone {zone} in [[dns.zones]] of the configuration");
    };
    if !(owner == zone || owner.ends_with(&format!(".{zone}"))) {
        bail!("{owner} does not lie in zone {zone}");
    }
    Ok(&found.file)
}

/// Puts the record into a configured zone's file, replacing one at the same name.
fn write_zone_record(config: &Config, zone: &str, owner: &str, record: &str) -> Result<PathBuf> {
    let path = zone_file(config, zone, owner)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the zone file {}", path.display()))?;
    let fqdn = format!("{owner}.");
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            !line
                .split_ascii_whitespace()
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(&fqdn))
        })
        .collect();
    let line = format!("{fqdn} 3600 IN TXT {}", quoted_strings(record));
    kept.push(&line);
    let mut out = kept.join("\n");
    out.push('\n');
    let tmp = path.with_extension("dkim-tmp");
    std::fs::write(&tmp, out).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// `pampa queue …`.
#[derive(Subcommand)]
pub enum QueueAction {
    /// The recipients waiting for delivery, oldest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every recipient of one message, with its state and last reply.
    Show {
        /// pampa's id of the message.
        message_id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Attempt a message's waiting recipients now.
    Retry {
        /// pampa's id of the message.
        message_id: Option<String>,
        /// Every waiting message.
        #[arg(long, conflicts_with = "message_id")]
        all: bool,
    },
    /// Give up on a message's waiting recipients, without a DSN.
    Drop {
        /// pampa's id of the message.
        message_id: String,
    },
}

fn queue_rows(entries: &[QueueEntry], now: i64) -> Vec<Vec<String>> {
    entries
        .iter()
        .map(|e| {
            let next = if e.status == pampa_directory::QueueStatus::Queued {
                let wait = e.next_attempt_at - now;
                if wait <= 0 {
                    "now".to_owned()
                } else {
                    format!(
                        "in {}",
                        humantime::format_duration(std::time::Duration::from_secs(wait as u64))
                    )
                }
            } else {
                "-".to_owned()
            };
            vec![
                e.message_id.clone(),
                e.recipient.clone(),
                e.status.as_str().to_owned(),
                e.attempts.to_string(),
                next,
                e.last_reply.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

/// `pampa queue …`.
pub async fn queue(config: &Config, action: QueueAction) -> Result<()> {
    let dir = directory(config).await?;
    let headers = [
        "MESSAGE",
        "RECIPIENT",
        "STATUS",
        "ATTEMPTS",
        "NEXT",
        "LAST REPLY",
    ];
    let now = Utc::now().timestamp();
    match action {
        QueueAction::List { json } => {
            let entries = dir.relay_queue().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!("The relay queue is empty.");
            } else {
                table::print(&headers, &queue_rows(&entries, now));
            }
        }
        QueueAction::Show { message_id, json } => {
            let entries = dir.relay_message(&message_id).await?;
            if entries.is_empty() {
                bail!("message {message_id} was never in the relay queue (see `pampa trace {message_id}`)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                table::print(&headers, &queue_rows(&entries, now));
            }
        }
        QueueAction::Retry { message_id, all } => {
            let ids: Vec<String> = match (message_id, all) {
                (Some(id), false) => vec![id],
                (None, true) => {
                    let mut ids: Vec<String> = dir
                        .relay_queue()
                        .await?
                        .into_iter()
                        .map(|e| e.message_id)
                        .collect();
                    ids.dedup();
                    ids
                }
                _ => bail!("name a message id, or give --all"),
            };
            let mut made_due = 0;
            for id in &ids {
                made_due += dir.retry_relay(id).await?;
            }
            if made_due == 0 {
                if ids.is_empty() {
                    bail!("the relay queue has nothing waiting");
                }
                bail!("nothing is waiting for {}", ids.join(", "));
            }
            println!("{made_due} recipient(s) will be attempted now.");
        }
        QueueAction::Drop { message_id } => {
            let log = EventLog::open_tool(&config.bus, &config.data_dir)
                .await
                .context("cannot open the event log")?;
            let dropped = pampa_relay::drop_message(&log, &dir, &message_id).await?;
            if dropped.is_empty() {
                bail!("message {message_id} has no recipient waiting in the relay queue");
            }
            println!(
                "Dropped {} recipient(s) of {message_id}: {}",
                dropped.len(),
                dropped.join(", ")
            );
        }
    }
    Ok(())
}
