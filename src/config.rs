//! The configuration file: every key has a default, so `pampa up` needs no file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pampa_bus::BusConfig;
use pampa_deliver::DeliverConfig;
use pampa_dns::DnsConfig;
use pampa_ingest::SmtpConfig;
use pampa_radius::RadiusConfig;
use pampa_relay::RelayConfig;
use pampa_stages::{
    antivirus::AntivirusConfig, auth::AuthConfig, rbl::RblConfig, score::ScoreConfig,
    whitelist::WhitelistConfig, OutboundConfig, PipelineConfig,
};
use pampa_submission::SubmissionConfig;
use serde::Deserialize;

/// The whole configuration (DESIGN.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite directory, the embedded log, bodies and Maildirs live.
    pub data_dir: PathBuf,
    /// The event log.
    pub bus: BusConfig,
    /// The SQL directory.
    pub db: DbConfig,
    /// The SMTP MX.
    pub smtp: SmtpConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// The deliver role.
    pub deliver: DeliverConfig,
    /// Which stages run between ingest and deliver, in order.
    pub pipeline: PipelineConfig,
    /// Each stage's settings.
    pub stages: StagesConfig,
    /// The RADIUS role: authentication and accounting for the NAS fleet.
    pub radius: RadiusConfig,
    /// The DNS role: authoritative zones, DNSBL mirror zones, recursion.
    pub dns: DnsConfig,
    /// The submission role: authenticated SMTP on 587 and 465.
    pub submission: SubmissionConfig,
    /// The checks submitted mail passes before the relay.
    pub outbound: OutboundConfig,
    /// The relay: outbound delivery to the internet.
    pub relay: RelayConfig,
}

/// The `[stages]` section: one table per stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagesConfig {
    /// Messages one stage process works on at once.
    pub concurrency: usize,
    /// `[stages.rbl]`.
    pub rbl: RblConfig,
    /// `[stages.whitelist]`.
    pub whitelist: WhitelistConfig,
    /// `[stages.antivirus]`.
    pub antivirus: AntivirusConfig,
    /// `[stages.auth]`.
    pub auth: AuthConfig,
    /// `[stages.score]`.
    pub score: ScoreConfig,
}

impl Default for StagesConfig {
    fn default() -> Self {
        StagesConfig {
            concurrency: 16,
            rbl: RblConfig::default(),
            whitelist: WhitelistConfig::default(),
            antivirus: AntivirusConfig::default(),
            auth: AuthConfig::default(),
            score: ScoreConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./pampa-data"),
            bus: BusConfig::default(),
            db: DbConfig::default(),
            smtp: SmtpConfig::default(),
            metrics: MetricsConfig::default(),
            deliver: DeliverConfig::default(),
            pipeline: PipelineConfig::default(),
            stages: StagesConfig::default(),
            radius: RadiusConfig::default(),
            dns: DnsConfig::default(),
            submission: SubmissionConfig::default(),
            outbound: OutboundConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

/// The `[db]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// `sqlite://…`, `mysql://…` or `postgres://…`; by default SQLite in `data_dir`.
    pub url: Option<String>,
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics`, `/healthz` and `/readyz` are served.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9898".to_owned(),
        }
    }
}

impl Config {
    /// Reads `path`, or `pampa.toml` if it exists, or falls back to the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None if Path::new("pampa.toml").exists() => PathBuf::from("pampa.toml"),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Parses configuration text and checks what the types cannot.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.pipeline.validate().map_err(anyhow::Error::msg)?;
        config.outbound.validate().map_err(anyhow::Error::msg)?;
        config.relay.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// The directory URL: the configured one, or SQLite under `data_dir`.
    pub fn db_url(&self) -> String {
        self.db
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("pampa.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.bus.url, "embedded");
        assert_eq!(config.smtp.listen, "127.0.0.1:2525");
        assert_eq!(config.db_url(), "sqlite://./pampa-data/pampa.db");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Config::parse("[smtp]\nlisten = \"0.0.0.0:25\"\nmax_mesage_bytes = 5\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_mesage_bytes"), "{err:#}");
        let err = Config::parse("[smtp_typo]\n").unwrap_err();
        assert!(format!("{err:#}").contains("smtp_typo"), "{err:#}");
    }

    #[test]
    fn durations_and_urls_parse() {
        let config = Config::parse(
            "data_dir = \"/srv/pampa\"\n[bus]\nurl = \"nats://127.0.0.1:4222\"\nmax_age = \"7d\"\n\
             [smtp]\nidle_timeout = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(config.bus.max_age.as_secs(), 7 * 86400);
        assert_eq!(config.smtp.idle_timeout.as_secs(), 30);
        assert_eq!(config.db_url(), "sqlite:///srv/pampa/pampa.db");
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }
}
