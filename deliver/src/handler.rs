//! The deliver stage: the last stage's event in, copies written, `mail.delivered` out.

use std::path::PathBuf;
use tracing::Instrument;

use pampa_bus::{EventLog, Handler, HandlerError, OutgoingEvent, StoredEvent};
use pampa_directory::{Address, Directory};
use pampa_schemas::{
    decode_analysis, derive_id, subjects, Decision, DeliveryOutcome, Disposition, Envelope,
    MailDelivered, RecipientDelivery, RECOVERED_EVENT_TYPE,
};

use crate::{
    headers::{spam_headers, strip_forged_headers},
    maildir::{to_lf, Maildir, Written},
    metrics,
};

/// The store name of a Maildir in events and in the directory.
const MAILDIR_STORE: &str = "maildir:";

/// The deliver stage.
pub struct Deliver {
    log: EventLog,
    directory: Directory,
    data_dir: PathBuf,
    hostname: String,
    /// This host's name as it signs `Authentication-Results` (RFC 8601's authserv-id):
    /// inbound headers claiming it are forged and removed.
    authserv_id: String,
    /// The durable consumer's name: `deliver`, or `recover` for the one that reads
    /// `mail.recovered`.
    name: &'static str,
}

/// The consumer name of the deliver stage.
pub const DELIVER_CONSUMER: &str = "deliver";

/// The consumer name of the deliver stage that reads `mail.recovered`.
pub const RECOVER_CONSUMER: &str = "recover";

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string().into())
}

fn permanent(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(e.to_string().into())
}

impl Deliver {
    /// A deliver stage writing default Maildirs under `{data_dir}/mail/`.
    pub fn new(log: EventLog, directory: Directory, data_dir: PathBuf, hostname: &str) -> Self {
        // Maildir file names end in the host name; '/' and ':' would break them.
        let authserv_id = hostname.to_owned();
        let hostname = hostname.replace(['/', ':'], "_");
        Deliver {
            log,
            directory,
            data_dir,
            hostname,
            authserv_id,
            name: DELIVER_CONSUMER,
        }
    }

    /// The same stage reading `mail.recovered` (an operator's `pampa recover`) under a
    /// durable consumer of its own, so recoveries never wait behind the live queue.
    pub fn recovering(mut self) -> Self {
        self.name = RECOVER_CONSUMER;
        self
    }

    /// The default Maildir of `user@domain`: `{data_dir}/mail/{domain}/{user}/`.
    pub fn default_maildir(&self, address: &Address) -> PathBuf {
        self.data_dir
            .join("mail")
            .join(address.domain())
            .join(address.local())
    }

    /// Where a recipient's mailbox is, per the directory.
    async fn maildir_of(&self, recipient: &str) -> Result<Result<Maildir, String>, HandlerError> {
        let address = Address::parse(recipient).map_err(permanent)?;
        let user = self.directory.find_user(&address).await.map_err(|e| {
            if e.is_transient() {
                transient(e)
            } else {
                permanent(e)
            }
        })?;
        let Some(user) = user else {
            return Ok(Err(format!("user {recipient} no longer exists")));
        };
        Ok(match user.mailbox_location.as_deref() {
            None | Some("") | Some(MAILDIR_STORE) => {
                Ok(Maildir::new(self.default_maildir(&address)))
            }
            Some(location) => match location.strip_prefix(MAILDIR_STORE) {
                Some(path) => Ok(Maildir::new(path)),
                None => Err(format!(
                    "mailbox store {location:?} is not supported by this build"
                )),
            },
        })
    }

    /// Writes one copy; returns where it went and how.
    async fn write_copy(
        &self,
        recipient: &str,
        name: &str,
        folder: &'static str,
        body: Vec<u8>,
        check_first: bool,
    ) -> Result<(String, DeliveryOutcome), HandlerError> {
        let maildir = match self.maildir_of(recipient).await? {
            Ok(maildir) => maildir,
            Err(reason) => return Ok((String::new(), DeliveryOutcome::Failed { reason })),
        };
        let name = name.to_owned();
        let written =
            tokio::task::spawn_blocking(move || maildir.write(folder, &name, &body, check_first))
                .await
                .map_err(transient)?
                .map_err(|e| transient(format!("cannot write the copy for {recipient}: {e}")))?;
        Ok(match written {
            Written::New(path) => (path.display().to_string(), DeliveryOutcome::Delivered),
            Written::AlreadyThere(path) => (
                path.display().to_string(),
                DeliveryOutcome::AlreadyDelivered,
            ),
        })
    }
}

/// The inbox, for mail that no stage judged (no `score` in the pipeline).
fn unjudged() -> Decision {
    Decision {
        disposition: Disposition::Inbox,
        reason: "not scored".to_owned(),
    }
}

impl Handler for Deliver {
    fn name(&self) -> &str {
        self.name
    }

    async fn process(
        &self,
        event: &StoredEvent,
        attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        let (head, analysis) = decode_analysis(&event.payload).map_err(permanent)?;
        let message_id = analysis.received.message_id.clone();
        let span = tracing::debug_span!("deliver", message_id = %message_id, event_id = %head.id);
        // Instrumented, not entered: a guard held across an await would tag whatever
        // else the worker thread runs meanwhile with this message's ids.
        async {
        let body = match self.log.get_blob(&analysis.received.blob).await {
            Ok(body) => body,
            Err(e) => return Err(HandlerError::from_blob(e)),
        };
        // Only a scored message gets pampa's verdict headers, and then nobody else's.
        let scored = analysis.score.is_some();
        let body = if scored {
            strip_forged_headers(&to_lf(&body), &self.authserv_id)
        } else {
            to_lf(&body)
        };
        // On a first try nothing can exist yet; on any later try (or a dead-letter retry)
        // an earlier try may have written some copies before it failed.
        // A recovery may be asked for twice, or for a copy that is already in the inbox.
        let check_first = attempt > 1
            || event.header(subjects::HEADER_RETRY).is_some()
            || head.event_type == RECOVERED_EVENT_TYPE;
        let secs = analysis.received.received_at.timestamp();
        let mut deliveries = Vec::with_capacity(analysis.recipients.len());
        for recipient in &analysis.recipients {
            let address = &recipient.address;
            let decision = recipient.decision.clone().unwrap_or_else(unjudged);
            let (folder, location, outcome) = match decision.disposition.folder() {
                None => (
                    "",
                    String::new(),
                    DeliveryOutcome::Discarded {
                        reason: decision.reason.clone(),
                    },
                ),
                Some(folder) => {
                    let name = format!(
                        "{secs}.M{}.{}",
                        derive_id(&message_id, address).replace('-', ""),
                        self.hostname
                    );
                    let copy = if scored {
                        let mut copy = spam_headers(&analysis, recipient, &decision).into_bytes();
                        copy.extend_from_slice(&body);
                        copy
                    } else {
                        body.clone()
                    };
                    let (location, outcome) = self
                        .write_copy(address, &name, folder, copy, check_first)
                        .await?;
                    (folder, location, outcome)
                }
            };
            let label = match &outcome {
                DeliveryOutcome::Delivered => "delivered",
                DeliveryOutcome::AlreadyDelivered => "already_delivered",
                DeliveryOutcome::Discarded { .. } => "discarded",
                DeliveryOutcome::Failed { .. } => "failed",
            };
            let folder_label = if folder.is_empty() { "none" } else { folder };
            ::metrics::counter!(metrics::COPIES_TOTAL, "store" => "maildir", "folder" => folder_label, "outcome" => label)
                .increment(1);
            tracing::debug!(recipient = %address, outcome = label, reason = %decision.reason, "Copy handled.");
            deliveries.push(RecipientDelivery {
                recipient: address.clone(),
                store: MAILDIR_STORE.to_owned(),
                folder: folder.to_owned(),
                location,
                outcome,
            });
        }
        let delivered = Envelope::caused_by(
            &head,
            "deliver",
            MailDelivered {
                message_id,
                deliveries,
            },
        );
        Ok(vec![
            OutgoingEvent::from_envelope(&delivered).map_err(permanent)?
        ])
        }
        .instrument(span)
        .await
    }
}
