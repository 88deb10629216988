//! The deliver stage: `mail.received` in, copies written, `mail.delivered` out.

use std::path::PathBuf;

use pampa_bus::{BusError, EventLog};
use pampa_bus::{Handler, HandlerError, OutgoingEvent, StoredEvent};
use pampa_directory::{Address, Directory};
use pampa_schemas::{
    decode, derive_id, subjects, DeliveryOutcome, Envelope, MailDelivered, MailReceived,
    RecipientDelivery,
};

use crate::{
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
}

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
        let hostname = hostname.replace(['/', ':'], "_");
        Deliver {
            log,
            directory,
            data_dir,
            hostname,
        }
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
}

impl Handler for Deliver {
    fn name(&self) -> &str {
        "deliver"
    }

    async fn process(
        &self,
        event: &StoredEvent,
        attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        let received: Envelope<MailReceived> = decode(&event.payload).map_err(permanent)?;
        let span = tracing::debug_span!("deliver", message_id = %received.payload.message_id, event_id = %received.id);
        let _enter = span.enter();
        let body = match self.log.get_blob(&received.payload.blob).await {
            Ok(body) => body,
            Err(e @ (BusError::BlobMissing(_) | BusError::BlobCorrupt { .. })) => {
                return Err(permanent(e))
            }
            Err(e) => return Err(transient(e)),
        };
        let body = to_lf(&body);
        // On a first try nothing can exist yet; on any later try (or a dead-letter retry)
        // an earlier try may have written some copies before it failed.
        let check_first = attempt > 1 || event.header(subjects::HEADER_RETRY).is_some();
        let secs = received.payload.received_at.timestamp();
        let mut deliveries = Vec::with_capacity(received.payload.recipients.len());
        for recipient in &received.payload.recipients {
            let name = format!(
                "{secs}.M{}.{}",
                derive_id(&received.payload.message_id, recipient).replace('-', ""),
                self.hostname
            );
            let folder = "INBOX";
            let (location, outcome) = match self.maildir_of(recipient).await? {
                Err(reason) => (String::new(), DeliveryOutcome::Failed { reason }),
                Ok(maildir) => {
                    let body = body.clone();
                    let name = name.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        maildir.write(folder, &name, &body, check_first)
                    })
                    .await
                    .map_err(transient)?
                    .map_err(|e| {
                        transient(format!("cannot write the copy for {recipient}: {e}"))
                    })?;
                    match written {
                        Written::New(path) => {
                            (path.display().to_string(), DeliveryOutcome::Delivered)
                        }
                        Written::AlreadyThere(path) => (
                            path.display().to_string(),
                            DeliveryOutcome::AlreadyDelivered,
                        ),
                    }
                }
            };
            let label = match &outcome {
                DeliveryOutcome::Delivered => "delivered",
                DeliveryOutcome::AlreadyDelivered => "already_delivered",
                DeliveryOutcome::Failed { .. } => "failed",
            };
            ::metrics::counter!(metrics::COPIES_TOTAL, "store" => "maildir", "folder" => folder, "outcome" => label)
                .increment(1);
            tracing::debug!(recipient, outcome = label, "Copy handled.");
            deliveries.push(RecipientDelivery {
                recipient: recipient.clone(),
                store: MAILDIR_STORE.to_owned(),
                folder: folder.to_owned(),
                location,
                outcome,
            });
        }
        let delivered = Envelope::caused_by(
            &received,
            "deliver",
            MailDelivered {
                message_id: received.payload.message_id.clone(),
                deliveries,
            },
        );
        Ok(vec![
            OutgoingEvent::from_envelope(&delivered).map_err(permanent)?
        ])
    }
}
