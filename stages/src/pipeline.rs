//! The `[pipeline]` section: which stages run, in which order, and so which subject each
//! one reads and writes.

use serde::Deserialize;

/// The stages pampa has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    /// DNSBL on the client IP, URI blocklists on body links.
    Rbl,
    /// Allow and block lists, and the address book.
    Whitelist,
    /// clamd.
    Antivirus,
    /// SPF, DKIM and DMARC results.
    Auth,
    /// Score and per-recipient decisions.
    Score,
}

impl StageName {
    /// The name: the durable consumer and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Rbl => "rbl",
            StageName::Whitelist => "whitelist",
            StageName::Antivirus => "antivirus",
            StageName::Auth => "auth",
            StageName::Score => "score",
        }
    }

    /// The event type this stage publishes.
    pub fn output(self) -> &'static str {
        match self {
            StageName::Rbl => "mail.rbl",
            StageName::Whitelist => "mail.whitelist",
            StageName::Antivirus => "mail.antivirus",
            StageName::Auth => "mail.auth",
            StageName::Score => "mail.scored",
        }
    }
}

/// The order of the stages between ingest and deliver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Stage names in order; `score` must come last when present, since it decides.
    pub stages: Vec<StageName>,
}

/// Without a configuration, `antivirus` is left out: it needs a running clamd, and
/// `pampa up` must work on a machine that has nothing else installed. Add it to
/// `pipeline.stages` once `[stages.antivirus] clamd` points at one.
impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            stages: vec![StageName::Rbl, StageName::Whitelist, StageName::Score],
        }
    }
}

impl PipelineConfig {
    /// Checks the order: no stage twice, and `score` last.
    pub fn validate(&self) -> Result<(), String> {
        for (i, stage) in self.stages.iter().enumerate() {
            if self.stages[..i].contains(stage) {
                return Err(format!("pipeline.stages names {} twice", stage.as_str()));
            }
            if *stage == StageName::Score && i + 1 != self.stages.len() {
                return Err(
                    "pipeline.stages: score decides, so it must be the last stage".to_owned(),
                );
            }
        }
        Ok(())
    }

    /// The subject `stage` reads: the previous stage's output, or `mail.received`.
    pub fn input_of(&self, stage: StageName) -> Option<&'static str> {
        let at = self.stages.iter().position(|s| *s == stage)?;
        Some(if at == 0 {
            "mail.received"
        } else {
            self.stages[at - 1].output()
        })
    }

    /// The subject deliver reads: the last stage's output, or `mail.received`.
    pub fn deliver_input(&self) -> &'static str {
        self.stages
            .last()
            .map(|s| s.output())
            .unwrap_or("mail.received")
    }
}

/// The `[outbound]` section: the checks submitted mail passes before the relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// `antivirus` and `score`, in order; `score` must be last, since it decides what
    /// is held.
    pub stages: Vec<StageName>,
}

/// `score` alone by default, like the inbound pipeline leaves antivirus out: it needs
/// a running clamd.
impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            stages: vec![StageName::Score],
        }
    }
}

impl OutboundConfig {
    /// Checks the list: only `antivirus` and `score`, each once, ending with `score`.
    pub fn validate(&self) -> Result<(), String> {
        for (i, stage) in self.stages.iter().enumerate() {
            if !matches!(stage, StageName::Antivirus | StageName::Score) {
                return Err(format!(
                    "outbound.stages: {} has nothing to check in submitted mail; use antivirus and score",
                    stage.as_str()
                ));
            }
            if self.stages[..i].contains(stage) {
                return Err(format!("outbound.stages names {} twice", stage.as_str()));
            }
        }
        if self.stages.last() != Some(&StageName::Score) {
            return Err(
                "outbound.stages must end with score, which decides what is held".to_owned(),
            );
        }
        Ok(())
    }

    /// The durable consumer of `stage` on outbound mail.
    pub fn consumer_name(stage: StageName) -> String {
        format!("outbound_{}", stage.as_str())
    }

    /// The subject `stage` reads on outbound mail: the previous check's output, or
    /// `mail.submitted`.
    pub fn input_of(&self, stage: StageName) -> Option<String> {
        let at = self.stages.iter().position(|s| *s == stage)?;
        Some(if at == 0 {
            pampa_schemas::SUBMITTED_EVENT_TYPE.to_owned()
        } else {
            self.output_of(self.stages[at - 1])
        })
    }

    /// The event type `stage` publishes on outbound mail: `mail.outbound` for the last
    /// (the relay's input), `mail.outbound_<stage>` before it.
    pub fn output_of(&self, stage: StageName) -> String {
        if self.stages.last() == Some(&stage) {
            pampa_schemas::OUTBOUND_EVENT_TYPE.to_owned()
        } else {
            format!("mail.outbound_{}", stage.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_checks_chain_from_submitted_to_outbound() {
        let o = OutboundConfig {
            stages: vec![StageName::Antivirus, StageName::Score],
        };
        assert!(o.validate().is_ok());
        assert_eq!(
            o.input_of(StageName::Antivirus).as_deref(),
            Some("mail.submitted")
        );
        assert_eq!(
            o.input_of(StageName::Score).as_deref(),
            Some("mail.outbound_antivirus")
        );
        assert_eq!(o.output_of(StageName::Score), "mail.outbound");
        assert_eq!(
            o.output_of(StageName::Antivirus),
            pampa_schemas::OUTBOUND_ANTIVIRUS_EVENT_TYPE
        );
        assert!(OutboundConfig {
            stages: vec![StageName::Rbl, StageName::Score]
        }
        .validate()
        .is_err());
        assert!(OutboundConfig {
            stages: vec![StageName::Antivirus]
        }
        .validate()
        .is_err());
    }

    #[test]
    fn subjects_chain_in_configured_order() {
        let p = PipelineConfig {
            stages: vec![StageName::Whitelist, StageName::Rbl, StageName::Score],
        };
        assert_eq!(p.input_of(StageName::Whitelist), Some("mail.received"));
        assert_eq!(p.input_of(StageName::Rbl), Some("mail.whitelist"));
        assert_eq!(p.input_of(StageName::Score), Some("mail.rbl"));
        assert_eq!(p.input_of(StageName::Antivirus), None);
        assert_eq!(p.deliver_input(), "mail.scored");
        assert_eq!(
            PipelineConfig { stages: vec![] }.deliver_input(),
            "mail.received"
        );
    }

    #[test]
    fn bad_orders_are_named() {
        let twice = PipelineConfig {
            stages: vec![StageName::Rbl, StageName::Rbl],
        };
        assert!(twice.validate().unwrap_err().contains("rbl twice"));
        let early = PipelineConfig {
            stages: vec![StageName::Score, StageName::Rbl],
        };
        assert!(early.validate().unwrap_err().contains("last"));
        assert!(PipelineConfig::default().validate().is_ok());
    }
}
