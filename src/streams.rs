//! `pampa streams check [--apply]`: the NATS JetStream layout against the configuration.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pampa_bus::{
    streams::{self, Finding},
    ConsumerSpec,
};
use pampa_deliver::{DELIVER_CONSUMER, RECOVER_CONSUMER};
use pampa_schemas::RECOVERED_EVENT_TYPE;

use crate::config::Config;

/// `pampa streams …`
#[derive(Subcommand)]
pub enum StreamsAction {
    /// Compare the streams, the body bucket and the stages' durable consumers on the
    /// NATS server with `[bus]` and `[pipeline]` (retention, replicas, limits, filters),
    /// and say what differs. Exits 1 when something is missing or differs.
    Check(CheckArgs),
}

/// `pampa streams check` options.
#[derive(Args)]
pub struct CheckArgs {
    /// Create what is missing and update what differs.
    #[arg(long)]
    apply: bool,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn streams(config: &Config, action: StreamsAction) -> Result<()> {
    let StreamsAction::Check(args) = action;
    if config.bus.url == "embedded" {
        println!(
            "The event log is the embedded one ({}): it has no streams or consumers to check.",
            config.data_dir.join("log").display()
        );
        return Ok(());
    }
    let findings = streams::check(&config.bus, &expected_consumers(config), args.apply)
        .await
        .with_context(|| format!("cannot check the streams on {}", config.bus.url))?;
    if args.json {
        let rows: Vec<_> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "kind": f.kind,
                    "name": f.name,
                    "state": f.state.to_string(),
                    "settled": f.state.is_settled(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| vec![f.kind.to_owned(), f.name.clone(), f.state.to_string()])
            .collect();
        crate::table::print(&["KIND", "NAME", "STATE"], &rows);
    }
    let unsettled: Vec<&Finding> = findings.iter().filter(|f| !f.state.is_settled()).collect();
    if !unsettled.is_empty() {
        bail!(
            "{} of {} differ from the configuration{}",
            unsettled.len(),
            findings.len(),
            if args.apply {
                ""
            } else {
                " (--apply makes them so)"
            }
        );
    }
    Ok(())
}

/// The durable consumers the configured roles read through: each pipeline stage, deliver
/// and the deliver of recovered mail; with outbound mail configured (a submission
/// certificate), also the outbound checks and the relay.
fn expected_consumers(config: &Config) -> Vec<ConsumerSpec> {
    let spec = |name: &str, filter: &str| ConsumerSpec::new(name, filter, &config.bus);
    let mut specs: Vec<ConsumerSpec> = config
        .pipeline
        .stages
        .iter()
        .filter_map(|stage| Some(spec(stage.as_str(), config.pipeline.input_of(*stage)?)))
        .collect();
    for (name, filter) in [
        (DELIVER_CONSUMER, config.pipeline.deliver_input()),
        (RECOVER_CONSUMER, RECOVERED_EVENT_TYPE),
    ] {
        let mut deliver = spec(name, filter);
        deliver.max_deliver = config.deliver.max_deliver.max(1);
        specs.push(deliver);
    }
    if config.submission.tls_cert.is_some() {
        for stage in &config.outbound.stages {
            if let Some(input) = config.outbound.input_of(*stage) {
                specs.push(spec(
                    &pampa_stages::OutboundConfig::consumer_name(*stage),
                    &input,
                ));
            }
        }
        specs.push(spec(
            pampa_relay::outbound::CONSUMER,
            pampa_schemas::OUTBOUND_EVENT_TYPE,
        ));
    }
    specs
}
