//! The `antivirus` stage: streams each message to clamd over INSTREAM and tags what it
//! finds.
//!
//! - An infected message gets a message-level tag `VIRUS:<signature>` for each
//!   signature clamd reports, with clamd's reply as evidence; `score` quarantines it.
//! - Clean mail gets no tag.
//! - Mail larger than `max_scan_bytes` is not sent (clamd could not give a verdict on
//!   it); by default it gets [`NOT_SCANNED_TOO_LARGE`].
//! - When clamd cannot be reached, times out or answers `ERROR`, the stage fails with
//!   [`StageError::Transient`]: the runner naks the input with a backoff, so nothing is
//!   lost and nothing passes unscanned while clamd is down.
//!
//! # Layout
//! - `mod.rs`: [`Antivirus`], its errors and metrics.
//! - `config.rs`: [`AntivirusConfig`] and [`ClamdAddress`].
//! - `clamd.rs`: the clamd protocol (`zPING`, `zINSTREAM`) and reply parsing.
//! - `tests.rs`: reply and config parsing, and the stage against a fake clamd.

mod clamd;
mod config;
#[cfg(test)]
mod tests;

use std::{io, time::Duration};

use pampa_schemas::{analysis::VIRUS_PREFIX, MailAnalysis, Tag};

pub use config::{AntivirusConfig, ClamdAddress, Oversize};

use crate::{metrics::STAGE_ERRORS_TOTAL, Body, Findings, Stage, StageError};
use clamd::ScanReply;

/// Tag for a message larger than `max_scan_bytes` that was passed on unscanned
/// (`oversize = "skip"`); its evidence gives the size and the limit.
pub const NOT_SCANNED_TOO_LARGE: &str = "AV_NOT_SCANNED_TOO_LARGE";

/// Gauge: 1 when clamd answered the last ping or scan, 0 when it could not be reached
/// or timed out.
pub const CLAMD_UP: &str = "pampa_antivirus_clamd_up";

/// Why the antivirus stage could not start or could not scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AntivirusError {
    /// `clamd` in the configuration is not a usable address.
    #[error("clamd address {address:?} is invalid: {reason}")]
    BadAddress {
        /// The configured value.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another setting is out of range.
    #[error("antivirus setting {setting} is invalid: {reason}")]
    BadSetting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting to clamd failed, or the connection broke before clamd answered.
    #[error("clamd at {address} is unreachable: {source}")]
    Unreachable {
        /// Where clamd was expected.
        address: ClamdAddress,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// clamd closed the connection without a word (it was stopping, or overloaded).
    #[error("clamd at {address} closed the connection without answering")]
    Closed {
        /// Where clamd listens.
        address: ClamdAddress,
    },
    /// clamd took longer than `timeout`.
    #[error("clamd at {address} did not answer within {timeout:?}")]
    Timeout {
        /// Where clamd listens.
        address: ClamdAddress,
        /// The configured timeout.
        timeout: Duration,
    },
    /// clamd answered `ERROR`, such as `INSTREAM size limit exceeded. ERROR`.
    #[error("clamd answered an error: {reply}")]
    Clamd {
        /// clamd's reply line.
        reply: String,
    },
    /// clamd's answer could not be understood.
    #[error("clamd answered something unexpected: {reply:?}")]
    UnexpectedReply {
        /// The reply, lossily decoded.
        reply: String,
    },
    /// The message is larger than `max_scan_bytes` and `oversize = "tempfail"`.
    #[error("the message has {size} bytes, more than max_scan_bytes ({max}), and oversize is \"tempfail\"")]
    TooLarge {
        /// The message size in bytes.
        size: u64,
        /// `max_scan_bytes`.
        max: u64,
    },
}

impl AntivirusError {
    /// The `kind` label of `pampa_stage_errors_total`: `unreachable`, `timeout`,
    /// `clamd_error`, `too_large` or `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            AntivirusError::Unreachable { .. } | AntivirusError::Closed { .. } => "unreachable",
            AntivirusError::Timeout { .. } => "timeout",
            AntivirusError::Clamd { .. } | AntivirusError::UnexpectedReply { .. } => "clamd_error",
            AntivirusError::TooLarge { .. } => "too_large",
            AntivirusError::BadAddress { .. } | AntivirusError::BadSetting { .. } => "config",
        }
    }

    /// Whether clamd itself answered (so it is up, even if the answer was an error).
    fn clamd_answered(&self) -> bool {
        matches!(
            self,
            AntivirusError::Clamd { .. } | AntivirusError::UnexpectedReply { .. }
        )
    }
}

/// The antivirus stage: one clamd, reached anew for every scan (clamd closes the
/// connection after each `z` command, and a fresh connection also finds a restarted
/// clamd without any reconnect logic).
#[derive(Debug, Clone)]
pub struct Antivirus {
    config: AntivirusConfig,
    address: ClamdAddress,
}

impl Antivirus {
    /// Checks the configuration. A bad clamd address or a zero timeout or size limit is
    /// an error here, at startup, rather than on the first message. clamd is not
    /// contacted: it may start after pampa, and [`Antivirus::ping`] reports whether it
    /// is there.
    pub fn new(config: AntivirusConfig) -> Result<Antivirus, AntivirusError> {
        let address: ClamdAddress = config.clamd.parse()?;
        if config.timeout.is_zero() {
            return Err(AntivirusError::BadSetting {
                setting: "timeout",
                reason: "it must be longer than zero",
            });
        }
        if config.max_scan_bytes == 0 {
            return Err(AntivirusError::BadSetting {
                setting: "max_scan_bytes",
                reason: "it must be greater than zero",
            });
        }
        Ok(Antivirus { config, address })
    }

    /// The configuration.
    pub fn config(&self) -> &AntivirusConfig {
        &self.config
    }

    /// Where clamd listens.
    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    /// Asks clamd `zPING` and expects `PONG`, within `timeout`; for `/readyz`. Sets
    /// [`CLAMD_UP`].
    pub async fn ping(&self) -> Result<(), AntivirusError> {
        let result = self.within_timeout(clamd::ping(&self.address)).await;
        self.record_up(&result);
        result
    }

    /// Scans raw message bytes, within `timeout`. Sets [`CLAMD_UP`].
    async fn scan(&self, raw: &[u8]) -> Result<ScanReply, AntivirusError> {
        let result = self
            .within_timeout(clamd::instream(&self.address, raw))
            .await;
        self.record_up(&result);
        result
    }

    async fn within_timeout<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, AntivirusError>>,
    ) -> Result<T, AntivirusError> {
        tokio::time::timeout(self.config.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(AntivirusError::Timeout {
                    address: self.address.clone(),
                    timeout: self.config.timeout,
                })
            })
    }

    fn record_up<T>(&self, result: &Result<T, AntivirusError>) {
        let up = match result {
            Ok(_) => true,
            Err(e) => e.clamd_answered(),
        };
        ::metrics::gauge!(CLAMD_UP).set(if up { 1.0 } else { 0.0 });
    }

    fn fail(&self, error: AntivirusError) -> StageError {
        ::metrics::counter!(STAGE_ERRORS_TOTAL, "stage" => Self::NAME, "kind" => error.kind())
            .increment(1);
        tracing::debug!(clamd = %self.address, kind = error.kind(), error = %error, "The message could not be scanned.");
        StageError::Transient(Box::new(error))
    }
}

impl Stage for Antivirus {
    const NAME: &'static str = "antivirus";
    const NEEDS_BODY: bool = true;

    async fn process(&self, _analysis: &MailAnalysis, body: &Body) -> Result<Findings, StageError> {
        let raw = body.raw();
        let size = raw.len() as u64;
        let max = self.config.max_scan_bytes;
        if size > max {
            return match self.config.oversize {
                Oversize::Skip => {
                    tracing::debug!(
                        size,
                        max,
                        "The message is too large to scan; it passes unscanned."
                    );
                    Ok(Findings {
                        tags: vec![Tag::new(
                            NOT_SCANNED_TOO_LARGE,
                            format!("{size} bytes, more than max_scan_bytes {max}"),
                        )],
                        ..Findings::default()
                    })
                }
                Oversize::Tempfail => Err(self.fail(AntivirusError::TooLarge { size, max })),
            };
        }
        match self.scan(raw).await {
            Ok(ScanReply::Clean) => {
                tracing::debug!(size, "clamd found the message clean.");
                Ok(Findings::default())
            }
            Ok(ScanReply::Infected(detections)) => {
                let tags = detections
                    .into_iter()
                    .map(|d| {
                        tracing::debug!(signature = %d.signature, "clamd found a virus.");
                        Tag::new(
                            format!("{VIRUS_PREFIX}{}", d.signature),
                            format!("clamd: {}", d.reply),
                        )
                    })
                    .collect();
                Ok(Findings {
                    tags,
                    ..Findings::default()
                })
            }
            Err(error) => Err(self.fail(error)),
        }
    }
}
