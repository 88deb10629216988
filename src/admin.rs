//! The administrative commands: domains, users, dead letters.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use pampa_bus::{runner, EventLog, OutgoingEvent, StoredEvent};
use pampa_directory::Directory;
use pampa_schemas::{derive_id, subjects};
use serde::Serialize;

use crate::{config::Config, table};

#[derive(Subcommand)]
pub enum DomainAction {
    /// Add a local domain.
    Add {
        /// The domain, such as example.org.
        domain: String,
    },
    /// List the local domains.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a local domain that has no users.
    Remove {
        /// The domain.
        domain: String,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user of a local domain.
    Add {
        /// The address, such as alice@example.org.
        address: String,
        /// The password (stored as an argon2 hash).
        #[arg(long)]
        password: String,
        /// The spam level: strict, normal, tolerant or off.
        #[arg(long, default_value = "normal")]
        level: String,
    },
    /// List users.
    List {
        /// Only this domain's users.
        #[arg(long)]
        domain: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user (the mailbox stays on disk).
    Remove {
        /// The address.
        address: String,
    },
    /// Set a user's password.
    Passwd {
        /// The address.
        address: String,
        /// The new password.
        #[arg(long)]
        password: String,
    },
    /// Move a user to another spam level.
    Level {
        /// The address.
        address: String,
        /// The level: strict, normal, tolerant or off.
        level: String,
    },
}

#[derive(Subcommand)]
pub enum DeadAction {
    /// List dead letters that have not been re-queued.
    List {
        /// Only this stage's.
        #[arg(long)]
        stage: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue dead letters to the stage that gave up on them.
    Retry {
        /// Dead-letter ids (from `pampa dead list`).
        ids: Vec<String>,
        /// Every dead letter of this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Every dead letter of every stage.
        #[arg(long, conflicts_with = "stage")]
        all: bool,
    },
}

async fn directory(config: &Config) -> Result<Directory> {
    Directory::connect(&config.db_url())
        .await
        .context("cannot open the directory database")
}

pub async fn domain(config: &Config, action: DomainAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        DomainAction::Add { domain } => {
            let name = dir.add_domain(&domain).await?;
            println!("Added domain {name}.");
        }
        DomainAction::List { json } => {
            let domains = dir.list_domains().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&domains)?);
            } else {
                let rows: Vec<Vec<String>> = domains.into_iter().map(|d| vec![d]).collect();
                table::print(&["DOMAIN"], &rows);
            }
        }
        DomainAction::Remove { domain } => {
            dir.remove_domain(&domain).await?;
            println!("Removed domain {domain}.");
        }
    }
    Ok(())
}

pub async fn user(config: &Config, action: UserAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        UserAction::Add {
            address,
            password,
            level,
        } => {
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            let user = dir.add_user(&address, &password, &level).await?;
            println!("Added user {} (level {}).", user.address, user.level.name);
        }
        UserAction::List { domain, json } => {
            let users = dir.list_users(domain.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                let rows: Vec<Vec<String>> = users
                    .into_iter()
                    .map(|u| {
                        let mailbox = u.mailbox_location.unwrap_or_else(|| {
                            let (local, domain) =
                                u.address.split_once('@').unwrap_or((&u.address, ""));
                            format!(
                                "{}/{domain}/{local}/",
                                config.data_dir.join("mail").display()
                            )
                        });
                        vec![u.address, u.level.name, mailbox]
                    })
                    .collect();
                table::print(&["ADDRESS", "LEVEL", "MAILBOX"], &rows);
            }
        }
        UserAction::Remove { address } => {
            dir.remove_user(&address).await?;
            println!("Removed user {address}.");
        }
        UserAction::Passwd { address, password } => {
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            dir.set_password(&address, &password).await?;
            println!("Changed the password of {address}.");
        }
        UserAction::Level { address, level } => {
            dir.set_level(&address, &level).await?;
            println!("{address} now uses level {level}.");
        }
    }
    Ok(())
}

/// Marks of re-queued dead letters live beside them, so `dead list` can leave them out.
const RETRIED_PREFIX: &str = "dead.retried.";

#[derive(Serialize)]
struct DeadLetter {
    id: String,
    stage: String,
    failed_at: String,
    input_subject: String,
    input_event_id: String,
    reason: String,
}

fn describe(event: &StoredEvent) -> DeadLetter {
    DeadLetter {
        id: event.id.clone(),
        stage: event
            .subject
            .strip_prefix("dead.")
            .unwrap_or(&event.subject)
            .to_owned(),
        failed_at: event
            .published_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        input_subject: event
            .header(subjects::HEADER_DEAD_SUBJECT)
            .unwrap_or("")
            .to_owned(),
        input_event_id: event
            .header(runner::HEADER_DEAD_EVENT_ID)
            .unwrap_or("")
            .to_owned(),
        reason: event
            .header(subjects::HEADER_DEAD_REASON)
            .unwrap_or("")
            .to_owned(),
    }
}

/// Dead letters not yet re-queued, oldest first.
async fn open_dead_letters(log: &EventLog) -> Result<Vec<StoredEvent>> {
    let all = log
        .replay(subjects::DEAD_SUBJECTS, chrono::DateTime::UNIX_EPOCH)
        .await?;
    let retried: std::collections::HashSet<Vec<u8>> = all
        .iter()
        .filter(|e| e.subject.starts_with(RETRIED_PREFIX))
        .map(|e| e.payload.clone())
        .collect();
    Ok(all
        .into_iter()
        .filter(|e| !e.subject.starts_with(RETRIED_PREFIX) && !retried.contains(e.id.as_bytes()))
        .collect())
}

pub async fn dead(config: &Config, action: DeadAction) -> Result<()> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let letters = open_dead_letters(&log).await?;
    match action {
        DeadAction::List { stage, json } => {
            let letters: Vec<DeadLetter> = letters
                .iter()
                .map(describe)
                .filter(|d| stage.as_ref().is_none_or(|s| &d.stage == s))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                println!("No dead letters.");
            } else {
                let rows: Vec<Vec<String>> = letters
                    .into_iter()
                    .map(|d| vec![d.id, d.stage, d.failed_at, d.reason])
                    .collect();
                table::print(&["ID", "STAGE", "FAILED AT", "REASON"], &rows);
            }
        }
        DeadAction::Retry { ids, stage, all } => {
            if ids.is_empty() && stage.is_none() && !all {
                bail!("name the dead letters to retry: give their ids, --stage STAGE, or --all");
            }
            for id in &ids {
                if !letters.iter().any(|l| &l.id == id) {
                    bail!("no open dead letter has id {id} (see `pampa dead list`)");
                }
            }
            let chosen: Vec<&StoredEvent> = letters
                .iter()
                .filter(|l| {
                    all || ids.contains(&l.id)
                        || stage
                            .as_ref()
                            .is_some_and(|s| l.subject == subjects::dead_letter(s))
                })
                .collect();
            for letter in &chosen {
                let requeued = runner::requeue_of(letter).with_context(|| {
                    format!("dead letter {} does not say where it came from", letter.id)
                })?;
                log.publish(&requeued).await?;
                let stage = letter.subject.strip_prefix("dead.").unwrap_or("unknown");
                let mark = OutgoingEvent {
                    subject: format!("{RETRIED_PREFIX}{stage}"),
                    id: derive_id(&letter.id, "retried"),
                    headers: Vec::new(),
                    payload: letter.id.as_bytes().to_vec(),
                };
                log.publish(&mark).await?;
            }
            println!("Re-queued {} dead letter(s).", chosen.len());
        }
    }
    Ok(())
}
