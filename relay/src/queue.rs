//! The queue runner: takes due recipients from the relay's queue, attempts them one
//! (message, domain) at a time within the per-domain and total caps, and records what
//! happened: the queue row first (so a retry is right even if an event is lost), then
//! `mail.relay.attempt`, the DSN if one is due, and `mail.relay.final`.
//!
//! Several relay processes can share one queue: each recipient is leased by the one
//! process whose conditional UPDATE wins it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use chrono::{TimeZone, Utc};
use pampa_bus::{BusError, EventLog, OutgoingEvent};
use pampa_directory::{Directory, DirectoryError, QueueEntry, QueueStatus};
use pampa_schemas::{
    derive_id, new_id, AttemptResult, BlobRef, Envelope, Event, RecipientAttempt, RelayAttempt,
    RelayFinal, RelayOutcome,
};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsConnector;

use crate::{
    client::{self, Outgoing},
    dkim::Signer,
    dsn::{self, Bounce, FailedRecipient},
    metrics,
    mx::MxResolver,
    outbound::OutboundHandler,
    RelayConfig,
};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The resolver could not be built (no usable `/etc/resolv.conf`).
    #[error("cannot set up DNS for the relay: {0}")]
    Resolver(String),
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] BusError),
}

pub(crate) struct Inner {
    pub config: RelayConfig,
    pub log: EventLog,
    pub directory: Directory,
    resolver: MxResolver,
    tls: TlsConnector,
    /// Woken by new mail, and by every attempt that ends (a slot is free).
    pub wake: Notify,
    /// One semaphore per destination domain with attempts in flight.
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    total: Arc<Semaphore>,
}

/// The relay role. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl Relay {
    /// Builds the relay.
    pub fn new(
        config: RelayConfig,
        log: EventLog,
        directory: Directory,
    ) -> Result<Self, RelayError> {
        let resolver = MxResolver::new(config.nameserver, config.dns_timeout)
            .map_err(|e| RelayError::Resolver(e.to_string()))?;
        let total = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Ok(Relay {
            inner: Arc::new(Inner {
                config,
                log,
                directory,
                resolver,
                tls: client::opportunistic_tls(),
                wake: Notify::new(),
                domains: Mutex::new(HashMap::new()),
                total,
            }),
        })
    }

    /// The consumer of `mail.outbound`, for the bus's runner.
    pub fn handler(&self) -> OutboundHandler {
        OutboundHandler {
            inner: self.inner.clone(),
        }
    }

    /// Works the queue until `shutdown` turns true.
    pub async fn run_queue(self, mut shutdown: watch::Receiver<bool>) {
        let inner = self.inner;
        for result in ["delivered", "deferred", "bounced"] {
            ::metrics::counter!(metrics::ATTEMPTS_TOTAL, "result" => result).increment(0);
        }
        for outcome in ["delivered", "bounced", "expired", "dropped"] {
            ::metrics::counter!(metrics::FINAL_TOTAL, "outcome" => outcome).increment(0);
        }
        for counter in [
            metrics::DSN_TOTAL,
            metrics::HELD_TOTAL,
            metrics::FLAGGED_TOTAL,
        ] {
            ::metrics::counter!(counter).increment(0);
        }
        ::metrics::gauge!(metrics::IN_FLIGHT).set(0.0);
        tracing::info!("The relay queue is running.");
        let mut sized_at: Option<Instant> = None;
        while !*shutdown.borrow() {
            // The queue's size for the dashboard, every few seconds (one indexed count).
            if sized_at.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10)) {
                sized_at = Some(Instant::now());
                if let Ok((queued, deferred)) = inner.directory.relay_queue_size().await {
                    ::metrics::gauge!(metrics::QUEUE_RECIPIENTS, "state" => "queued")
                        .set(queued as f64);
                    ::metrics::gauge!(metrics::QUEUE_RECIPIENTS, "state" => "deferred")
                        .set(deferred as f64);
                }
            }
            let free = inner.total.available_permits();
            if free > 0 {
                let now = Utc::now().timestamp();
                let lease = inner.config.lease().as_secs() as i64;
                let busy_domains = inner.busy_domains();
                match inner
                    .directory
                    .claim_due_relay(now, lease, free, &busy_domains)
                    .await
                {
                    Ok(claimed) => {
                        let busy = claimed.len() == free;
                        for group in by_message_and_domain(claimed) {
                            // A slot of the domain and one of the total, or the rows go
                            // back unattempted: waiting while holding them would let
                            // their leases run out and starve the other domains.
                            let slots = inner
                                .domain_gate(&group[0].domain)
                                .try_acquire_owned()
                                .ok()
                                .zip(inner.total.clone().try_acquire_owned().ok());
                            let Some((domain_slot, permit)) = slots else {
                                for entry in &group {
                                    let _ = inner
                                        .directory
                                        .release_relay(&entry.message_id, &entry.recipient)
                                        .await;
                                }
                                continue;
                            };
                            let inner = inner.clone();
                            tokio::spawn(async move {
                                ::metrics::gauge!(metrics::IN_FLIGHT).increment(1.0);
                                inner.attempt(group).await;
                                ::metrics::gauge!(metrics::IN_FLIGHT).decrement(1.0);
                                drop((domain_slot, permit));
                                inner.wake.notify_one();
                            });
                        }
                        if busy {
                            // More may be due: claim again as soon as a slot frees.
                            tokio::select! {
                                _ = inner.wake.notified() => {}
                                _ = shutdown.changed() => {}
                            }
                            continue;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "Cannot read the relay queue."),
                }
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Groups claimed rows so one session carries a message's recipients at one domain.
fn by_message_and_domain(entries: Vec<QueueEntry>) -> Vec<Vec<QueueEntry>> {
    let mut groups: Vec<Vec<QueueEntry>> = Vec::new();
    for entry in entries {
        match groups
            .iter_mut()
            .find(|g| g[0].message_id == entry.message_id && g[0].domain == entry.domain)
        {
            Some(group) => group.push(entry),
            None => groups.push(vec![entry]),
        }
    }
    groups
}

/// An event of `message_id`'s history, caused by `causation` when known.
fn history_event<P: Event>(message_id: &str, causation: &str, payload: P) -> Envelope<P> {
    let mut event = Envelope::root(new_id(), "relay", payload);
    event.correlation_id = message_id.to_owned();
    event.causation_id = (!causation.is_empty()).then(|| causation.to_owned());
    event
}

impl Inner {
    fn domain_gate(&self, domain: &str) -> Arc<Semaphore> {
        let mut domains = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the domains nobody is sending to, so the map stays small.
        if domains.len() > 1024 {
            let max = self.config.max_per_domain.max(1);
            domains.retain(|_, gate| gate.available_permits() < max);
        }
        domains
            .entry(domain.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_domain.max(1))))
            .clone()
    }

    /// The domains whose every slot is taken now.
    fn busy_domains(&self) -> Vec<String> {
        let domains = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        domains
            .iter()
            .filter(|(_, gate)| gate.available_permits() == 0)
            .map(|(domain, _)| domain.clone())
            .collect()
    }

    /// One attempt for one message's recipients at one domain; the caller holds a
    /// slot of the domain.
    async fn attempt(&self, group: Vec<QueueEntry>) {
        let first = group[0].clone();
        let blob = BlobRef {
            key: first.blob_key.clone(),
            size: first.blob_size,
            sha256: first.blob_sha256.clone(),
        };
        let recipients: Vec<String> = group.iter().map(|e| e.recipient.clone()).collect();
        let all = |result, why: &str| client::AttemptReport::all(&recipients, result, why);
        let started = Instant::now();
        let (report, body) = match self.log.get_blob(&blob).await {
            Ok(body) => {
                let signed = self.sign(&body).await;
                let outgoing = Outgoing {
                    sender: &first.sender,
                    recipients: &recipients,
                    body: &signed,
                };
                // The attempt ends well inside its lease: a tarpitting MX must not keep
                // it going until another claim sends the same mail again.
                let deadline = self
                    .config
                    .lease()
                    .saturating_sub(std::time::Duration::from_secs(60));
                let attempt = client::attempt(
                    &self.config,
                    &self.resolver,
                    &self.tls,
                    &first.domain,
                    &outgoing,
                );
                let report = match tokio::time::timeout(deadline, attempt).await {
                    Ok(report) => report,
                    Err(_) => all(
                        AttemptResult::Deferred,
                        &format!(
                            "the attempt took longer than {}s and was abandoned",
                            deadline.as_secs()
                        ),
                    ),
                };
                (report, body)
            }
            Err(error @ (BusError::BlobMissing(_) | BusError::BlobCorrupt { .. })) => (
                all(
                    AttemptResult::Bounced,
                    &format!("554 5.3.0 the message body is no longer readable: {error}"),
                ),
                Vec::new(),
            ),
            Err(error) => (
                all(
                    AttemptResult::Deferred,
                    &format!("cannot read the message body: {error}"),
                ),
                Vec::new(),
            ),
        };
        ::metrics::histogram!(metrics::ATTEMPT_SECONDS).record(started.elapsed().as_secs_f64());
        self.record(&group, report, &body).await;
    }

    /// Puts a DKIM signature on top when the `From:` domain has a key.
    async fn sign(&self, body: &[u8]) -> Vec<u8> {
        let Some(domain) = from_domain(body) else {
            return body.to_vec();
        };
        let key = match self.directory.dkim_key(&domain).await {
            Ok(Some(key)) => key,
            Ok(None) => return body.to_vec(),
            Err(error) => {
                // Unsigned mail may be scored lower; held mail is not delivered at all.
                tracing::warn!(%error, domain, "Cannot read the DKIM key; sending unsigned.");
                return body.to_vec();
            }
        };
        let signed = Signer::new(
            &key.domain,
            &key.selector,
            &key.algorithm,
            &key.private_key_pem,
        )
        .and_then(|signer| signer.sign(body));
        match signed {
            Ok(header) => {
                let mut out = Vec::with_capacity(header.len() + body.len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(body);
                out
            }
            Err(error) => {
                tracing::warn!(%error, domain, "Cannot DKIM-sign; sending unsigned.");
                body.to_vec()
            }
        }
    }

    /// Writes an attempt's results: the DSN first (if one is due), then the queue rows
    /// (only while this process still holds their lease), then the events.
    async fn record(&self, group: &[QueueEntry], report: client::AttemptReport, body: &[u8]) {
        let now = Utc::now().timestamp();
        let lifetime = self.config.queue_lifetime.as_secs() as i64;
        let first = &group[0];
        let attempt_number = group.iter().map(|e| e.attempts + 1).max().unwrap_or(1);
        // What each recipient's attempt means for the queue.
        let mut decided = Vec::with_capacity(report.recipients.len());
        for (recipient, result, reply) in &report.recipients {
            let Some(entry) = group.iter().find(|e| &e.recipient == recipient) else {
                continue;
            };
            ::metrics::counter!(metrics::ATTEMPTS_TOTAL, "result" => result.as_str()).increment(1);
            let outcome = match result {
                AttemptResult::Delivered => Some(RelayOutcome::Delivered),
                AttemptResult::Bounced => Some(RelayOutcome::Bounced),
                AttemptResult::Deferred if now - entry.queued_at >= lifetime => {
                    Some(RelayOutcome::Expired)
                }
                AttemptResult::Deferred => None,
            };
            decided.push((entry, reply, outcome));
        }
        // The DSN is queued before the rows are finished: a crash in between tries the
        // recipients again, and the DSN's id (from the message, the domain and the
        // attempt) keeps a second bounce of the same attempt from being queued twice.
        let failed: Vec<FailedRecipient> = decided
            .iter()
            .filter(|(_, _, o)| matches!(o, Some(RelayOutcome::Bounced | RelayOutcome::Expired)))
            .map(|(entry, reply, _)| FailedRecipient {
                recipient: entry.recipient.clone(),
                status: enhanced_status(reply),
                diagnostic: (*reply).clone(),
                remote_mta: report.mx.clone(),
            })
            .collect();
        let expired = decided
            .iter()
            .any(|(_, _, o)| *o == Some(RelayOutcome::Expired));
        let dsn_sent = !failed.is_empty()
            && self
                .bounce(first, &failed, body, expired, attempt_number)
                .await;
        let mut finals: Vec<RelayFinal> = Vec::new();
        for (entry, reply, outcome) in decided {
            let recipient = &entry.recipient;
            let attempts = entry.attempts + 1;
            let written = match outcome {
                None => {
                    let next = now + self.config.backoff(attempts).as_secs() as i64;
                    tracing::info!(message_id = %entry.message_id, recipient, reply, attempts, "Delivery deferred.");
                    self.directory
                        .defer_relay(&entry.message_id, recipient, reply, next, entry.lease_until)
                        .await
                }
                Some(outcome) => {
                    let status = if outcome == RelayOutcome::Delivered {
                        QueueStatus::Delivered
                    } else {
                        QueueStatus::Bounced
                    };
                    self.directory
                        .finish_relay(
                            &entry.message_id,
                            recipient,
                            status,
                            reply,
                            Some(entry.lease_until),
                        )
                        .await
                }
            };
            match (written, outcome) {
                (Err(error), _) => {
                    // The lease runs out and the recipient is attempted again: a
                    // duplicate at worst, never a loss.
                    tracing::warn!(%error, message_id = %entry.message_id, "Cannot record an attempt in the queue.");
                }
                (Ok(false), _) => {
                    tracing::warn!(message_id = %entry.message_id, recipient, "The lease ran out during the attempt; its result is not recorded.");
                }
                (Ok(true), Some(outcome)) => {
                    tracing::info!(message_id = %entry.message_id, recipient, reply, outcome = outcome.as_str(), "Recipient left the relay queue.");
                    ::metrics::counter!(metrics::FINAL_TOTAL, "outcome" => outcome.as_str())
                        .increment(1);
                    finals.push(RelayFinal {
                        message_id: entry.message_id.clone(),
                        recipient: recipient.clone(),
                        outcome,
                        reply: reply.clone(),
                        attempts,
                        dsn_sent: dsn_sent && outcome != RelayOutcome::Delivered,
                    });
                }
                (Ok(true), None) => {}
            }
        }
        let attempt = history_event(
            &first.message_id,
            &first.event_id,
            RelayAttempt {
                message_id: first.message_id.clone(),
                domain: first.domain.clone(),
                mx: report.mx.clone(),
                tls: report.tls,
                attempt: attempt_number,
                recipients: report
                    .recipients
                    .iter()
                    .map(|(recipient, result, reply)| RecipientAttempt {
                        recipient: recipient.clone(),
                        result: *result,
                        reply: reply.clone(),
                    })
                    .collect(),
            },
        );
        self.publish(&attempt).await;
        for done in finals {
            self.publish(&history_event(&first.message_id, &attempt.id, done))
                .await;
        }
    }

    /// Queues a DSN to the sender, if one may go; whether it did.
    async fn bounce(
        &self,
        entry: &QueueEntry,
        failed: &[FailedRecipient],
        body: &[u8],
        expired: bool,
        attempt_number: u32,
    ) -> bool {
        // pampa's own DSNs have no submitter: a bounce of a bounce goes nowhere. The
        // sender of submitted mail was checked against the user at submission, so a
        // DSN never goes to a forged address; held (spam) mail never gets here.
        if entry.submitted_by.is_empty() || !dsn::may_bounce(&entry.sender, body) {
            return false;
        }
        let Some((_, domain)) = entry.sender.rsplit_once('@') else {
            return false;
        };
        let arrival = Utc
            .timestamp_opt(entry.queued_at, 0)
            .single()
            .unwrap_or_else(Utc::now);
        let report = dsn::build(&Bounce {
            reporting_mta: &self.config.hostname,
            original_sender: &entry.sender,
            message_id: &entry.message_id,
            arrival,
            recipients: failed,
            original: body,
            expired,
        });
        let dsn_id = derive_id(
            &entry.message_id,
            &format!("dsn {} {attempt_number}", entry.domain),
        );
        let blob = match self.log.put_blob(&dsn_id, &report).await {
            Ok(blob) => blob,
            Err(error) => {
                tracing::warn!(%error, message_id = %entry.message_id, "Cannot store a DSN; the sender is not told.");
                return false;
            }
        };
        let now = Utc::now().timestamp();
        let row = QueueEntry {
            message_id: dsn_id,
            recipient: entry.sender.clone(),
            domain: domain.to_ascii_lowercase(),
            sender: String::new(),
            submitted_by: String::new(),
            event_id: String::new(),
            blob_key: blob.key,
            blob_size: blob.size,
            blob_sha256: blob.sha256,
            status: QueueStatus::Queued,
            attempts: 0,
            queued_at: now,
            next_attempt_at: now,
            last_reply: None,
            finished_at: None,
            lease_until: 0,
        };
        match self
            .directory
            .enqueue_relay(std::slice::from_ref(&row))
            .await
        {
            Ok(_) => {
                ::metrics::counter!(metrics::DSN_TOTAL).increment(1);
                tracing::info!(message_id = %entry.message_id, dsn = %row.message_id, to = %entry.sender, "DSN queued to the sender.");
                self.wake.notify_one();
                true
            }
            Err(error) => {
                tracing::warn!(%error, message_id = %entry.message_id, "Cannot queue a DSN; the sender is not told.");
                false
            }
        }
    }

    async fn publish<P: Event>(&self, event: &Envelope<P>) {
        publish_history(&self.log, event).await;
    }
}

/// Publishes an event of a message's history, trying a few times: the queue row is
/// written already, so a lost event costs the history a line, not the mail.
pub(crate) async fn publish_history<P: Event>(log: &EventLog, event: &Envelope<P>) -> bool {
    let Ok(outgoing) = OutgoingEvent::from_envelope(event) else {
        return false;
    };
    for _ in 0..3 {
        match log.publish(&outgoing).await {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(%error, event_type = %event.event_type, "Cannot record a relay event; trying again.");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    false
}

/// The enhanced status code in a reply (`550 5.1.1 …` → `5.1.1`), or one made from
/// its class.
fn enhanced_status(reply: &str) -> String {
    let mut words = reply.split_ascii_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(esc) = words.next().filter(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return esc.to_owned();
    }
    match code.as_bytes().first() {
        Some(b'5') => "5.0.0".to_owned(),
        _ => "4.4.7".to_owned(),
    }
}

/// The domain of the first `From:` address.
fn from_domain(body: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::new().parse_headers(body)?;
    let address = message.from()?.first()?.address()?.to_owned();
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
}

/// Ends a message's queued recipients by an operator's decision (`pampa queue drop`);
/// returns the recipients dropped.
pub async fn drop_message(
    log: &EventLog,
    directory: &Directory,
    message_id: &str,
) -> Result<Vec<String>, DirectoryError> {
    let mut dropped = Vec::new();
    for entry in directory.relay_message(message_id).await? {
        if entry.status != QueueStatus::Queued {
            continue;
        }
        if directory
            .finish_relay(
                message_id,
                &entry.recipient,
                QueueStatus::Dropped,
                "dropped by an operator",
                None,
            )
            .await?
        {
            let event = history_event(
                message_id,
                &entry.event_id,
                RelayFinal {
                    message_id: message_id.to_owned(),
                    recipient: entry.recipient.clone(),
                    outcome: RelayOutcome::Dropped,
                    reply: "dropped by an operator".to_owned(),
                    attempts: entry.attempts,
                    dsn_sent: false,
                },
            );
            publish_history(log, &event).await;
            dropped.push(entry.recipient);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_read_or_made() {
        assert_eq!(enhanced_status("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(enhanced_status("554 rejected"), "5.0.0");
        assert_eq!(enhanced_status("connection refused"), "4.4.7");
        assert_eq!(enhanced_status("452 4.2.2 mailbox full"), "4.2.2");
    }

    #[test]
    fn from_domain_is_the_first_from_address() {
        assert_eq!(
            from_domain(b"From: Alice <alice@Example.ORG>\r\nSubject: x\r\n\r\nbody\r\n")
                .as_deref(),
            Some("example.org")
        );
        assert_eq!(from_domain(b"Subject: x\r\n\r\nbody\r\n"), None);
    }
}
