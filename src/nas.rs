//! `pampa nas add|list|remove`: the NAS clients the RADIUS server answers.
//!
//! A NAS is known by its source network and has its own shared secret. Changes are plain
//! SQL writes; the RADIUS role caches the NAS list for a few seconds
//! (`radius_directory::NAS_CACHE_TTL`), so they take effect that soon without a restart.

use anyhow::{Context, Result};
use clap::Subcommand;
use pampa_directory::{
    radius::{parse_network, RECOMMENDED_SECRET_LEN},
    Directory, NasClient,
};
use serde::Serialize;

use crate::{config::Config, table};

/// `pampa nas …`.
#[derive(Subcommand)]
pub enum NasAction {
    /// Register a NAS client by source address or network.
    Add {
        /// Its source address (192.0.2.7) or network (192.0.2.0/24, 2001:db8::/32).
        /// Packets from elsewhere are dropped silently; the most specific network wins.
        #[arg(value_name = "CIDR")]
        network: String,
        /// The shared secret, as configured on the NAS (8 to 128 bytes; RFC 2865
        /// prefers 16 or more).
        #[arg(long)]
        secret: String,
        /// Accept Access-Requests without a Message-Authenticator from this NAS. Only
        /// for legacy gear that cannot send one: it leaves the NAS open to BlastRADIUS
        /// (CVE-2024-3596).
        #[arg(long)]
        no_message_authenticator: bool,
        /// A note for operators (site, model, …).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List the NAS clients (secrets are never printed, only their length).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a NAS client, named by the network it was added as.
    Remove {
        /// The address or network, as added or as `pampa nas list` prints it.
        #[arg(value_name = "CIDR")]
        network: String,
    },
}

/// A NAS as `pampa nas list` shows it. The secret is reduced to its length: a listing
/// ends up in terminals, tickets and logs, and BlastRADIUS showed how much a leaked
/// secret is worth.
#[derive(Serialize)]
struct NasView {
    network: String,
    secret_set: bool,
    secret_length: usize,
    require_message_authenticator: bool,
    description: Option<String>,
    created_at: String,
}

impl NasView {
    fn of(nas: NasClient) -> Self {
        NasView {
            network: nas.network.to_string(),
            secret_set: !nas.secret.is_empty(),
            secret_length: nas.secret.len(),
            require_message_authenticator: nas.require_message_authenticator,
            description: nas.description,
            created_at: chrono::DateTime::from_timestamp(nas.created_at, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
        }
    }
}

async fn directory(config: &Config) -> Result<Directory> {
    Directory::connect(&config.db_url())
        .await
        .context("cannot open the directory database")
}

/// Runs `pampa nas …`.
pub async fn nas(config: &Config, action: NasAction) -> Result<()> {
    let dir = directory(config).await?;
    match action {
        NasAction::Add {
            network,
            secret,
            no_message_authenticator,
            description,
        } => {
            let nas = dir
                .add_nas(
                    &network,
                    &secret,
                    !no_message_authenticator,
                    description.as_deref(),
                )
                .await
                .with_context(|| format!("cannot add NAS {network:?}"))?;
            if secret.len() < RECOMMENDED_SECRET_LEN {
                eprintln!(
                    "warning: the shared secret of {} is {} bytes; RFC 2865 prefers at \
                     least {RECOMMENDED_SECRET_LEN}, and short secrets can be guessed \
                     offline from one captured packet",
                    nas.network,
                    secret.len()
                );
            }
            if nas.network.prefix_len() == 0 {
                eprintln!(
                    "warning: {} matches every source address; any host that knows the \
                     secret can use this server",
                    nas.network
                );
            }
            if nas.require_message_authenticator {
                println!(
                    "Added NAS {} (Message-Authenticator required).",
                    nas.network
                );
            } else {
                println!(
                    "Added NAS {} (Message-Authenticator NOT required: open to BlastRADIUS, \
                     CVE-2024-3596; use only for legacy gear).",
                    nas.network
                );
            }
        }
        NasAction::List { json } => {
            let views: Vec<NasView> = dir.list_nas().await?.into_iter().map(NasView::of).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else if views.is_empty() {
                println!("No NAS clients; add one with `pampa nas add CIDR --secret SECRET`.");
            } else {
                let rows: Vec<Vec<String>> = views
                    .into_iter()
                    .map(|v| {
                        vec![
                            v.network,
                            format!("set ({} bytes)", v.secret_length),
                            if v.require_message_authenticator {
                                "required".into()
                            } else {
                                "not required".into()
                            },
                            v.created_at,
                            v.description.unwrap_or_default(),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "NETWORK",
                        "SECRET",
                        "MESSAGE-AUTHENTICATOR",
                        "ADDED",
                        "DESCRIPTION",
                    ],
                    &rows,
                );
            }
        }
        NasAction::Remove { network } => {
            dir.remove_nas(&network).await?;
            let shown = parse_network(&network)
                .map(|n| n.to_string())
                .unwrap_or(network);
            println!("Removed NAS {shown}.");
        }
    }
    Ok(())
}
