//! The stage contract (DESIGN.md §3a) and the one handler that runs every stage.

use std::{future::Future, sync::Arc};
use tracing::Instrument;

use pampa_bus::{EventLog, Handler, HandlerError, OutgoingEvent, StoredEvent};
use pampa_schemas::{decode_analysis, Decision, Envelope, MailAnalysis, Tag};

use crate::metrics;

/// Why a stage could not finish: [`HandlerError::Transient`] retries with backoff,
/// [`HandlerError::Permanent`] goes to dead letters.
pub type StageError = HandlerError;

/// The raw RFC 5322 bytes of the message, as ingest stored them.
#[derive(Debug, Clone, Default)]
pub struct Body {
    raw: Arc<Vec<u8>>,
}

impl Body {
    /// Wraps raw message bytes.
    pub fn new(raw: Vec<u8>) -> Self {
        Body { raw: Arc::new(raw) }
    }

    /// The bytes (CRLF line ends).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// `score`'s output: the message score and each recipient's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The message score.
    pub score: f64,
    /// (recipient, decision), one per recipient.
    pub decisions: Vec<(String, Decision)>,
}

/// What a stage found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Tags about the message.
    pub tags: Vec<Tag>,
    /// Tags about one recipient: (recipient, tag).
    pub recipient_tags: Vec<(String, Tag)>,
    /// Set by `score` only.
    pub verdict: Option<Verdict>,
}

/// One stage: a pure async function from a message's analysis so far (and its body) to
/// new findings. It never sees NATS, acks, retries or metrics.
pub trait Stage: Send + Sync + 'static {
    /// Stable snake_case name: the durable consumer, the metric label, the span field.
    const NAME: &'static str;
    /// Whether `process` reads the body (otherwise the blob is not fetched).
    const NEEDS_BODY: bool;

    /// Examines one message.
    fn process(
        &self,
        analysis: &MailAnalysis,
        body: &Body,
    ) -> impl Future<Output = Result<Findings, StageError>> + Send;
}

/// Runs a [`Stage`] under the bus's [`pampa_bus::Runner`]: decodes the input (a
/// `mail.received` or an earlier stage's analysis), fetches the body, merges the findings,
/// and publishes the next event with an id derived from the input's.
pub struct StageHandler<S> {
    stage: S,
    log: EventLog,
    output: String,
    /// The durable consumer's name: the stage's own, or `outbound_<stage>` when the
    /// stage checks submitted mail, which must not share the inbound consumer.
    name: String,
}

fn permanent(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(e.to_string().into())
}

impl<S: Stage> StageHandler<S> {
    /// Runs `stage`, publishing its results as `output` (an event type such as `mail.rbl`).
    pub fn new(stage: S, log: EventLog, output: &str) -> Self {
        StageHandler {
            stage,
            log,
            output: output.to_owned(),
            name: S::NAME.to_owned(),
        }
    }

    /// Runs under another consumer name (the outbound checks' `outbound_<stage>`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The stage.
    pub fn stage(&self) -> &S {
        &self.stage
    }
}

/// Merges a stage's findings into the analysis.
pub fn merge(analysis: &mut MailAnalysis, stage: &str, findings: Findings) {
    for tag in &findings.tags {
        count_tag(stage, tag);
    }
    analysis.tags.extend(findings.tags);
    for (address, tag) in findings.recipient_tags {
        if let Some(recipient) = analysis
            .recipients
            .iter_mut()
            .find(|r| r.address == address)
        {
            count_tag(stage, &tag);
            recipient.tags.push(tag);
        }
    }
    if let Some(verdict) = findings.verdict {
        analysis.score = Some(verdict.score);
        for (address, decision) in verdict.decisions {
            if let Some(recipient) = analysis
                .recipients
                .iter_mut()
                .find(|r| r.address == address)
            {
                ::metrics::counter!(metrics::DECISIONS_TOTAL, "disposition" => decision.disposition.as_str())
                    .increment(1);
                recipient.decision = Some(decision);
            }
        }
    }
    analysis.stages.push(stage.to_owned());
}

fn count_tag(stage: &str, tag: &Tag) {
    let name = if tag.is_virus() {
        "VIRUS".to_owned()
    } else {
        tag.name.clone()
    };
    ::metrics::counter!(metrics::STAGE_TAGS_TOTAL, "stage" => stage.to_owned(), "tag" => name)
        .increment(1);
}

impl<S: Stage> Handler for StageHandler<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(
        &self,
        event: &StoredEvent,
        _attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        let (head, mut analysis) = decode_analysis(&event.payload).map_err(permanent)?;
        // Instrumented, not entered: a guard held across an await would tag whatever
        // else the worker thread runs meanwhile with this message's ids.
        let span = tracing::debug_span!("stage", stage = S::NAME, message_id = %analysis.received.message_id, event_id = %head.id);
        let findings = async {
            let body = if S::NEEDS_BODY {
                let raw = self.log.get_blob(&analysis.received.blob).await;
                Body::new(raw.map_err(HandlerError::from_blob)?)
            } else {
                Body::default()
            };
            self.stage.process(&analysis, &body).await
        }
        .instrument(span)
        .await?;
        merge(&mut analysis, S::NAME, findings);
        let next = Envelope::caused_by_as(&head, S::NAME, &self.output, analysis);
        Ok(vec![OutgoingEvent::from_envelope(&next).map_err(permanent)?])
    }
}
