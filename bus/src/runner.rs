//! The stage runner: consume → process → publish → ack, written once.
//!
//! A [`Handler`] is a pure async function from one input event to the events it
//! derives. It never sees acks, retries or metrics; the runner owns those, so the ack
//! discipline of DESIGN.md §3a lives in one place:
//!
//! | outcome | what the runner does |
//! |---|---|
//! | `Ok(events)` | publish each, wait for every ack, then ack the input |
//! | `Transient`, tries left | nak with exponential backoff |
//! | `Transient` on the last try, or `Permanent` | publish to `dead.<stage>`, then term |

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use pampa_schemas::{new_id, subjects};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::{metrics, ConsumerSpec, Delivery, EventLog, OutgoingEvent, StoredEvent};

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler could not finish an input. The retry class is in the type.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// It may work later (a store is down, a timeout): retry with backoff.
    #[error("transient: {0}")]
    Transient(BoxError),
    /// It will never work (undecodable input, a refused write): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(BoxError),
}

impl HandlerError {
    /// The class of a failed body read: a body that retention removed or that does not
    /// match its checksum will never be readable (permanent); anything else may pass.
    pub fn from_blob(error: crate::BusError) -> Self {
        match error {
            e @ (crate::BusError::BlobMissing(_) | crate::BusError::BlobCorrupt { .. }) => {
                HandlerError::Permanent(e.into())
            }
            e => HandlerError::Transient(e.into()),
        }
    }
}

/// One stage's work on one input.
pub trait Handler: Send + Sync + 'static {
    /// Stable snake_case name: the durable consumer, the metric label, the dead-letter subject.
    fn name(&self) -> &str;
    /// Derives the output events of one input. `attempt` counts from 1; above 1 an earlier
    /// try may have done part of the work, so side effects must check before they act.
    fn process(
        &self,
        event: &StoredEvent,
        attempt: u32,
    ) -> impl Future<Output = Result<Vec<OutgoingEvent>, HandlerError>> + Send;
}

/// Runs one handler against its durable consumer until shutdown.
pub struct Runner<H> {
    log: EventLog,
    handler: Arc<H>,
    spec: ConsumerSpec,
    backoff: Duration,
    concurrency: usize,
}

/// The longest a failing input waits between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The longest one input is worked on before it is given back as a transient failure.
const MAX_WORK: Duration = Duration::from_secs(1800);

impl<H: Handler> Runner<H> {
    /// A runner reading `filter` through a durable consumer named after the handler.
    pub fn new(log: EventLog, handler: H, filter: &str, config: &crate::BusConfig) -> Self {
        let spec = ConsumerSpec::new(handler.name(), filter, config);
        Runner {
            log,
            handler: Arc::new(handler),
            spec,
            backoff: config.retry_backoff,
            concurrency: 16,
        }
    }

    /// Tries of one input before it goes to dead letters, instead of the bus's
    /// `max_deliver` (deliver waits for a store that is down much longer than a stage
    /// waits for a DNS answer).
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.spec.max_deliver = max_deliver.max(1);
        self
    }

    /// How many inputs are worked on at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Consumes until `shutdown` turns true. Errors of the log itself are retried, so a
    /// NATS outage pauses the stage instead of ending it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = self.spec.name.clone();
        let mut consumer = loop {
            match self.log.consumer(self.spec.clone()).await {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::warn!(stage = %name, %error, "Cannot open the consumer; trying again.");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        tracing::info!(stage = %name, filter = %self.spec.filter, "Stage is consuming.");
        // The series dashboards and alerts read exist from the start, at zero, instead of
        // appearing with the first input: a panel with no data does not say "no work".
        ::metrics::gauge!(metrics::CONSUMER_LAG, "consumer" => name.clone()).increment(0.0);
        for outcome in ["ok", "retry", "dead"] {
            ::metrics::counter!(metrics::STAGE_PROCESSED_TOTAL, "stage" => name.clone(), "outcome" => outcome)
                .increment(0);
        }
        ::metrics::counter!(metrics::DEAD_LETTERS_TOTAL, "stage" => name.clone()).increment(0);
        // Up to `concurrency` inputs in work at once, each on its own task: a slot freed
        // is refilled by the next fetch, so one slow input (a big scan, a DNS timeout)
        // holds one slot, not the whole batch it came with.
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let this = Arc::new(self);
        while !*shutdown.borrow() {
            // Wait for a free slot (or shutdown); fetch only as many as are free.
            let free = match slots.available_permits() {
                0 => tokio::select! {
                    permit = slots.acquire() => {
                        drop(permit);
                        continue;
                    }
                    _ = shutdown.changed() => break,
                },
                n => n,
            };
            let batch = tokio::select! {
                batch = consumer.fetch(free, Duration::from_secs(1)) => batch,
                _ = shutdown.changed() => break,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(stage = %name, %error, "Fetch failed; trying again.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let Some(last) = batch.last() else { continue };
            ::metrics::gauge!(metrics::CONSUMER_LAG, "consumer" => name.clone())
                .set(last.pending as f64);
            for delivery in batch {
                // Never waits: the fetch took no more than the free slots.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    this.handle(delivery).await;
                    drop(slot);
                });
            }
        }
        // Let the inputs in work finish (their acks or naks), as the batch did before.
        let _ = slots.acquire_many(this.concurrency as u32).await;
        tracing::info!(stage = %name, "Stage stopped.");
    }

    async fn handle(&self, delivery: Delivery) {
        let span = tracing::debug_span!(
            "stage",
            stage = self.spec.name.as_str(),
            event_id = %delivery.event.id
        );
        self.settle(delivery).instrument(span).await
    }

    /// Processes one input and settles it: publish and ack, nak, or dead-letter.
    async fn settle(&self, delivery: Delivery) {
        let stage = self.spec.name.as_str();
        let started = Instant::now();
        // A handler that panics fails this input for good (it would panic again), rather
        // than dropping it unsettled to come back after every ack wait forever.
        let result = {
            let work = AssertUnwindSafe(self.handler.process(&delivery.event, delivery.attempt))
                .catch_unwind();
            tokio::pin!(work);
            // Long work (a big scan, a slow mailbox store) tells the log it is still going,
            // so the ack deadline moves and the input is not handed to another worker
            // meanwhile (DESIGN.md §3a).
            let mut still_working =
                tokio::time::interval((self.spec.ack_wait / 3).max(Duration::from_millis(10)));
            still_working.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            still_working.tick().await;
            // Not forever: a handler stuck on a hung mount or a query without a timeout
            // gives its input back (as a transient failure) after MAX_WORK.
            let deadline = tokio::time::sleep(MAX_WORK);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = &mut deadline => {
                        break Ok(Err(HandlerError::Transient(
                            format!("the work took longer than {}s", MAX_WORK.as_secs()).into(),
                        )));
                    }
                    _ = still_working.tick() => {
                        if let Err(error) = delivery.in_progress().await {
                            tracing::debug!(%error, "Cannot extend the ack deadline.");
                        }
                    }
                }
            }
        };
        let result = result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(HandlerError::Permanent(
                format!("the handler panicked: {what}").into(),
            ))
        });
        ::metrics::histogram!(metrics::STAGE_DURATION_SECONDS, "stage" => stage.to_owned())
            .record(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(outputs) => self.publish_then_ack(delivery, outputs).await,
            Err(HandlerError::Transient(error)) if delivery.attempt < self.spec.max_deliver => {
                tracing::debug!(%error, attempt = delivery.attempt, "Transient failure; will retry.");
                self.retry_later(delivery).await
            }
            Err(HandlerError::Transient(error)) => {
                let reason = format!("gave up after {} tries: {error}", delivery.attempt);
                self.dead_letter(delivery, &reason).await
            }
            Err(HandlerError::Permanent(error)) => {
                self.dead_letter(delivery, &error.to_string()).await
            }
        };
        ::metrics::counter!(metrics::STAGE_PROCESSED_TOTAL, "stage" => stage.to_owned(), "outcome" => outcome)
            .increment(1);
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }

    async fn retry_later(&self, delivery: Delivery) -> &'static str {
        let delay = self.backoff_for(delivery.attempt);
        if let Err(error) = delivery.nak(delay).await {
            tracing::warn!(%error, "Nak failed; the input is redelivered after the ack wait.");
        }
        "retry"
    }

    async fn publish_then_ack(
        &self,
        delivery: Delivery,
        outputs: Vec<OutgoingEvent>,
    ) -> &'static str {
        for output in &outputs {
            if let Err(error) = self.log.publish(output).await {
                tracing::warn!(%error, "Publishing the stage's output failed; will retry.");
                return self.retry_later(delivery).await;
            }
        }
        if let Err(error) = delivery.ack().await {
            // The outputs are stored; a redelivery republishes the same ids, which dedup drops.
            tracing::warn!(%error, "Ack failed; the input will be redelivered.");
        }
        "ok"
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> &'static str {
        let stage = self.spec.name.as_str();
        tracing::warn!(stage, event_id = %delivery.event.id, reason, "Input goes to dead letters.");
        let dead = dead_letter_of(&delivery.event, stage, reason);
        if let Err(error) = self.log.publish(&dead).await {
            tracing::warn!(%error, "Cannot store the dead letter; the input stays and is retried.");
            return self.retry_later(delivery).await;
        }
        ::metrics::counter!(metrics::DEAD_LETTERS_TOTAL, "stage" => stage.to_owned()).increment(1);
        if let Err(error) = delivery.term().await {
            tracing::warn!(%error, "Term failed; the input may come back once more.");
        }
        "dead"
    }
}

/// The header that keeps a dead letter's original event id.
pub const HEADER_DEAD_EVENT_ID: &str = "Dead-Event-Id";

/// The headers minus those that dead-lettering and retrying add, so neither stacks up
/// when an input dies, is retried and dies again.
fn without_dead_letter_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    const ADDED: [&str; 4] = [
        subjects::HEADER_DEAD_REASON,
        subjects::HEADER_DEAD_SUBJECT,
        HEADER_DEAD_EVENT_ID,
        subjects::HEADER_RETRY,
    ];
    headers
        .iter()
        .filter(|(name, _)| !ADDED.iter().any(|added| name.eq_ignore_ascii_case(added)))
        .cloned()
        .collect()
}

/// Wraps an input that a stage gave up on as an event on `dead.<stage>`. The payload is
/// the original bytes, so a retry can re-queue it unchanged.
pub fn dead_letter_of(event: &StoredEvent, stage: &str, reason: &str) -> OutgoingEvent {
    let mut headers = without_dead_letter_headers(&event.headers);
    // Header values are single lines.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    headers.push((subjects::HEADER_DEAD_REASON.to_owned(), reason));
    headers.push((
        subjects::HEADER_DEAD_SUBJECT.to_owned(),
        event.subject.clone(),
    ));
    headers.push((HEADER_DEAD_EVENT_ID.to_owned(), event.id.clone()));
    OutgoingEvent {
        subject: subjects::dead_letter(stage),
        id: new_id(),
        headers,
        payload: event.payload.clone(),
    }
}

/// Turns a dead letter back into its original input, marked as a retry so idempotent
/// stages check for earlier work. It gets a fresh id: the original id may still sit in
/// the duplicate window and would be dropped.
pub fn requeue_of(dead: &StoredEvent) -> Option<OutgoingEvent> {
    let subject = dead.header(subjects::HEADER_DEAD_SUBJECT)?.to_owned();
    let mut headers = without_dead_letter_headers(&dead.headers);
    headers.push((subjects::HEADER_RETRY.to_owned(), dead.id.clone()));
    Some(OutgoingEvent {
        subject,
        id: new_id(),
        headers,
        payload: dead.payload.clone(),
    })
}
