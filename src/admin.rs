//! The administrative commands: domains, users (and their RADIUS settings), dead letters.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use pampa_bus::{runner, EventLog, OutgoingEvent, StoredEvent};
use pampa_deliver::location::{format_location, Store};
use pampa_directory::{Directory, DirectoryError, RadiusProfile, RadiusUser};
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
    /// Set a user's RADIUS settings (the options given; the others are kept), or show
    /// them: with --show, --json or no option at all. The user logs in to RADIUS with
    /// their mail password (PAP); CHAP and MS-CHAPv2 need --chap-secret.
    Radius(RadiusArgs),
    /// The other addresses a user may send as through submission.
    Alias {
        #[command(subcommand)]
        action: crate::outbound::AliasAction,
    },
    /// Set a user's sending limits (messages and recipients an hour), or show them.
    Limits(crate::outbound::LimitsArgs),
    /// The users whose outbound mail scored as spam: their mail is held, and they may
    /// not send until unflagged.
    Flagged {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Clear a user's spam flag, so they may send again.
    Unflag {
        /// The address.
        address: String,
    },
    /// Move a user's mailbox to another store, or (with --also) deliver to two stores
    /// at once while a migration copies the old mail: maildir:, maildir:/path,
    /// lmtp://host:port or lmtp+unix:///path.
    Move {
        /// The address.
        address: String,
        /// The store new mail goes to.
        #[arg(long, value_name = "STORE")]
        to: String,
        /// A second store that gets every copy too (the old one, during a migration).
        #[arg(long, value_name = "STORE")]
        also: Option<String>,
    },
    /// Set a user's mailbox quota (300M, 2G, 500000; or none). Maildir enforces it;
    /// an LMTP server applies its own.
    Quota {
        /// The address.
        address: String,
        /// The size, or `none`.
        size: String,
    },
}

/// A size as people write it: `300M`, `2G`, `512K`, or bytes.
fn parse_size(text: &str) -> Result<Option<u64>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits.parse().with_context(|| {
        format!("{text:?} is not a size: write 300M, 2G, 512K, a number of bytes, or none")
    })?;
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {text:?}: use K, M or G"),
    };
    number
        .checked_mul(factor)
        .map(Some)
        .with_context(|| format!("{text:?} is too large"))
}

/// `pampa user radius ADDR …`.
#[derive(clap::Args)]
pub struct RadiusArgs {
    /// The address.
    address: String,
    /// A secret for CHAP and MS-CHAPv2, STORED IN CLEARTEXT: both methods need the
    /// password itself on the server side, which the argon2 hash of the mail password
    /// cannot give. Without one, only PAP works for this user. Use a password distinct
    /// from the mail password.
    #[arg(long, value_name = "S", conflicts_with = "no_chap_secret")]
    chap_secret: Option<String>,
    /// Delete the CHAP secret: CHAP and MS-CHAPv2 are refused from now on.
    #[arg(long)]
    no_chap_secret: bool,
    /// Session-Timeout: the longest session, in seconds.
    #[arg(long, value_name = "SECS")]
    session_timeout: Option<u32>,
    /// Idle-Timeout: the longest idle time, in seconds.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u32>,
    /// Framed-IP-Address: a fixed IPv4 address (replaces a framed pool).
    #[arg(long, value_name = "IP", conflicts_with = "framed_pool")]
    framed_ip: Option<Ipv4Addr>,
    /// Framed-Pool: the name of an address pool on the NAS (replaces a framed IP).
    #[arg(long, value_name = "NAME")]
    framed_pool: Option<String>,
    /// Class: a tag the NAS echoes in its accounting (a plan name, say).
    #[arg(long, value_name = "TEXT")]
    class: Option<String>,
    /// Simultaneous-Use: how many sessions may be open at once.
    #[arg(long, value_name = "N")]
    simultaneous_use: Option<u32>,
    /// Remove a setting (may be repeated).
    #[arg(long, value_enum, value_name = "SETTING")]
    unset: Vec<RadiusSetting>,
    /// Show the settings (after any change).
    #[arg(long)]
    show: bool,
    /// Show the settings as JSON.
    #[arg(long)]
    json: bool,
}

/// A setting `pampa user radius --unset` can remove.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RadiusSetting {
    SessionTimeout,
    IdleTimeout,
    FramedIp,
    FramedPool,
    Class,
    SimultaneousUse,
}

impl RadiusArgs {
    fn changes_anything(&self) -> bool {
        self.chap_secret.is_some()
            || self.no_chap_secret
            || self.session_timeout.is_some()
            || self.idle_timeout.is_some()
            || self.framed_ip.is_some()
            || self.framed_pool.is_some()
            || self.class.is_some()
            || self.simultaneous_use.is_some()
            || !self.unset.is_empty()
    }

    /// The settings this command sets, to refuse an `--unset` of the same one.
    fn sets(&self, setting: RadiusSetting) -> bool {
        match setting {
            RadiusSetting::SessionTimeout => self.session_timeout.is_some(),
            RadiusSetting::IdleTimeout => self.idle_timeout.is_some(),
            RadiusSetting::FramedIp => self.framed_ip.is_some(),
            RadiusSetting::FramedPool => self.framed_pool.is_some(),
            RadiusSetting::Class => self.class.is_some(),
            RadiusSetting::SimultaneousUse => self.simultaneous_use.is_some(),
        }
    }

    /// `profile` with this command's removals, then its settings, applied.
    fn apply(&self, mut profile: RadiusProfile) -> RadiusProfile {
        for setting in &self.unset {
            match setting {
                RadiusSetting::SessionTimeout => profile.session_timeout = None,
                RadiusSetting::IdleTimeout => profile.idle_timeout = None,
                RadiusSetting::FramedIp => profile.framed_ip = None,
                RadiusSetting::FramedPool => profile.framed_pool = None,
                RadiusSetting::Class => profile.class = None,
                RadiusSetting::SimultaneousUse => profile.simultaneous_use = None,
            }
        }
        if let Some(seconds) = self.session_timeout {
            profile.session_timeout = Some(seconds);
        }
        if let Some(seconds) = self.idle_timeout {
            profile.idle_timeout = Some(seconds);
        }
        // A fixed address and a pool are alternatives: setting one drops the other.
        if let Some(ip) = self.framed_ip {
            profile.framed_ip = Some(ip);
            profile.framed_pool = None;
        }
        if let Some(pool) = &self.framed_pool {
            profile.framed_pool = Some(pool.clone());
            profile.framed_ip = None;
        }
        if let Some(class) = &self.class {
            profile.class = Some(class.clone());
        }
        if let Some(n) = self.simultaneous_use {
            profile.simultaneous_use = Some(n);
        }
        profile
    }
}

/// A user's RADIUS settings as `pampa user radius --show` prints them: the CHAP secret
/// only as set or not, since it is a cleartext password.
#[derive(Serialize)]
struct RadiusView {
    address: String,
    chap_secret_set: bool,
    #[serde(flatten)]
    profile: RadiusProfile,
}

fn show_radius(user: RadiusUser, json: bool) -> Result<()> {
    let view = RadiusView {
        address: user.address,
        chap_secret_set: user.chap_secret.is_some(),
        profile: user.profile,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let unset = || "-".to_owned();
    let seconds = |s: Option<u32>| s.map_or_else(unset, |s| format!("{s} s"));
    let p = &view.profile;
    let rows = vec![
        vec!["address".into(), view.address.clone()],
        vec![
            "chap secret".into(),
            if view.chap_secret_set {
                "set (CHAP and MS-CHAPv2 allowed)".into()
            } else {
                "not set (PAP only)".into()
            },
        ],
        vec!["session timeout".into(), seconds(p.session_timeout)],
        vec!["idle timeout".into(), seconds(p.idle_timeout)],
        vec![
            "framed ip".into(),
            p.framed_ip.map_or_else(unset, |ip| ip.to_string()),
        ],
        vec![
            "framed pool".into(),
            p.framed_pool.clone().unwrap_or_else(unset),
        ],
        vec!["class".into(), p.class.clone().unwrap_or_else(unset)],
        vec![
            "simultaneous use".into(),
            p.simultaneous_use
                .map_or_else(|| "no limit".into(), |n| n.to_string()),
        ],
    ];
    table::print(&["SETTING", "VALUE"], &rows);
    Ok(())
}

async fn user_radius(dir: &Directory, args: RadiusArgs) -> Result<()> {
    if let Some(both) = args.unset.iter().find(|s| args.sets(**s)) {
        let name = both
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        bail!("--{name} and --unset {name} contradict each other; give one of them");
    }
    let known = |user: Option<RadiusUser>| {
        user.ok_or_else(|| DirectoryError::UnknownUser(args.address.clone()))
    };
    let mut user = known(dir.radius_user(&args.address).await?)?;
    if args.changes_anything() {
        let profile = args.apply(user.profile.clone());
        let chap_secret = if args.no_chap_secret {
            None
        } else {
            args.chap_secret.clone().or(user.chap_secret.clone())
        };
        dir.set_radius_profile(&user.address, chap_secret.as_deref(), &profile)
            .await
            .with_context(|| format!("cannot change the RADIUS settings of {}", user.address))?;
        if !args.show && !args.json {
            println!("Changed the RADIUS settings of {}.", user.address);
            if args.chap_secret.is_some() {
                println!("Its CHAP secret is stored in cleartext (CHAP and MS-CHAPv2 need it).");
            }
            return Ok(());
        }
        user = known(dir.radius_user(&user.address).await?)?;
    }
    show_radius(user, args.json)
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
        UserAction::Alias { action } => crate::outbound::alias(config, action).await?,
        UserAction::Limits(args) => crate::outbound::limits(config, args).await?,
        UserAction::Flagged { json } => crate::outbound::flagged(config, json).await?,
        UserAction::Unflag { address } => crate::outbound::unflag(config, &address).await?,
        UserAction::Move { address, to, also } => {
            let mut stores = vec![Store::parse(&to).map_err(anyhow::Error::msg)?];
            if let Some(also) = also {
                stores.push(Store::parse(&also).map_err(anyhow::Error::msg)?);
            }
            let location = format_location(&stores);
            dir.set_mailbox_location(&address, Some(&location)).await?;
            println!(
                "New mail for {address} goes to {}.",
                stores
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
        UserAction::Quota { address, size } => {
            let bytes = parse_size(&size)?;
            if bytes == Some(0) {
                bail!("a quota of 0 would refuse every message; give a size, or none for no quota");
            }
            dir.set_quota(&address, bytes).await?;
            match bytes {
                Some(bytes) => println!("{address} may keep {bytes} bytes of mail."),
                None => println!("{address} has no quota."),
            }
        }
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
        UserAction::Radius(args) => user_radius(&dir, args).await?,
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
pub(crate) async fn open_dead_letters(log: &EventLog) -> Result<Vec<StoredEvent>> {
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
