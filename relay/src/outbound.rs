//! The consumer of `mail.outbound`: mail the checks passed goes into the queue; mail
//! they judged spam or infected is held, and its sender flagged.

use std::sync::Arc;

use pampa_bus::{Handler, HandlerError, OutgoingEvent, StoredEvent};
use pampa_directory::{DirectoryError, QueueEntry, QueueStatus};
use pampa_schemas::{decode_analysis, Disposition, Envelope, MailHeld};

use crate::{metrics, queue::Inner};

/// The durable consumer name of the relay's input.
pub const CONSUMER: &str = "relay";

/// Reads `mail.outbound`.
pub struct OutboundHandler {
    pub(crate) inner: Arc<Inner>,
}

fn permanent(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(e.to_string().into())
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string().into())
}

impl Handler for OutboundHandler {
    fn name(&self) -> &str {
        CONSUMER
    }

    async fn process(
        &self,
        event: &StoredEvent,
        _attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        let (head, analysis) = decode_analysis(&event.payload).map_err(permanent)?;
        let received = &analysis.received;
        let Some(user) = received.submitted_by.clone() else {
            return Err(permanent(
                "mail.outbound without submitted_by: only submitted mail is relayed",
            ));
        };
        let held = analysis.recipients.iter().find_map(|r| {
            r.decision
                .as_ref()
                .filter(|d| d.disposition != Disposition::Inbox)
                .map(|d| d.reason.clone())
        });
        if let Some(reason) = held {
            let directory = &self.inner.directory;
            let flagged_now = match directory
                .flag_sender(&user, &reason, &received.message_id)
                .await
            {
                Ok(flagged_now) => flagged_now,
                // The user was removed since: nobody is left to flag.
                Err(DirectoryError::UnknownUser(_)) => false,
                Err(e) => return Err(transient(e)),
            };
            ::metrics::counter!(metrics::HELD_TOTAL).increment(1);
            if flagged_now {
                ::metrics::counter!(metrics::FLAGGED_TOTAL).increment(1);
                tracing::warn!(user, message_id = %received.message_id, reason, "Outbound mail held as spam; the sender is flagged.");
            } else {
                tracing::info!(user, message_id = %received.message_id, reason, "Outbound mail held as spam.");
            }
            let next = Envelope::caused_by(
                &head,
                "relay",
                MailHeld {
                    message_id: received.message_id.clone(),
                    submitted_by: user,
                    score: analysis.score,
                    reason,
                    recipients: received.recipients.clone(),
                    flagged_now,
                },
            );
            return Ok(vec![OutgoingEvent::from_envelope(&next).map_err(permanent)?]);
        }
        let now = chrono::Utc::now().timestamp();
        let entries: Vec<QueueEntry> = received
            .recipients
            .iter()
            .map(|recipient| QueueEntry {
                message_id: received.message_id.clone(),
                recipient: recipient.clone(),
                domain: recipient
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default(),
                sender: received.mail_from.clone(),
                submitted_by: user.clone(),
                event_id: head.id.clone(),
                blob_key: received.blob.key.clone(),
                blob_size: received.blob.size,
                blob_sha256: received.blob.sha256.clone(),
                status: QueueStatus::Queued,
                attempts: 0,
                queued_at: now,
                next_attempt_at: now,
                last_reply: None,
                finished_at: None,
                lease_until: 0,
            })
            .collect();
        // Rows already there (a redelivery of this event) are kept as they are.
        self.inner
            .directory
            .enqueue_relay(&entries)
            .await
            .map_err(transient)?;
        self.inner.wake.notify_one();
        Ok(Vec::new())
    }
}
