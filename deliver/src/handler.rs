//! The deliver stage: the last stage's event in, copies written to every store of every
//! recipient, `mail.delivered` out.
//!
//! Each (message, recipient, store) is tracked on its own. A copy a store has is never
//! written again; a store that says "later" is tried again with backoff while the
//! others are left alone; a 5xx is final and recorded. While any copy waits, each try
//! publishes its own `mail.delivered` with the `deferred` outcomes, so `pampa trace`
//! shows every store's every result.

use std::{collections::HashMap, path::PathBuf, sync::Arc};
use tracing::Instrument;

use pampa_bus::{EventLog, Handler, HandlerError, OutgoingEvent, StoredEvent};
use pampa_directory::{Address, DeliveryMark, Directory, MarkState};
use pampa_schemas::{
    decode_analysis, derive_id, subjects, Decision, DeliveryOutcome, Disposition, Envelope,
    EnvelopeHead, MailDelivered, RecipientDelivery, RECOVERED_EVENT_TYPE,
};

use crate::{
    config::{DeliverConfig, FolderDelivery},
    headers::{spam_headers, strip_forged_headers, strip_pampa_headers},
    lmtp::{to_crlf, LmtpClient, RcptReply},
    location::{parse_location, LmtpAddress, Store},
    maildir::{to_lf, Maildir, Written},
    metrics, quota,
};

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
    config: DeliverConfig,
    lmtp: Arc<LmtpClient>,
}

/// The consumer name of the deliver stage.
pub const DELIVER_CONSUMER: &str = "deliver";

/// The consumer name of the deliver stage that reads `mail.recovered`.
pub const RECOVER_CONSUMER: &str = "recover";

/// The header every LMTP copy carries: the same value on every try of one message into
/// one folder (and different for a recovered copy), so a server's Sieve `duplicate`
/// test, which keeps its record per mailbox, can drop the one copy a crash between the
/// server's reply and deliver's mark could send twice.
pub const DELIVERY_ID_HEADER: &str = "X-Pampa-Delivery-Id";

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string().into())
}

fn permanent(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(e.to_string().into())
}

fn directory_error(e: pampa_directory::DirectoryError) -> HandlerError {
    if e.is_transient() {
        transient(e)
    } else {
        permanent(e)
    }
}

/// One copy to hand to one store.
struct Copy {
    recipient: String,
    store: Store,
    folder: &'static str,
    /// The copy, LF line ends, verdict headers on top.
    body: Arc<Vec<u8>>,
    quota_bytes: Option<u64>,
}

/// A copy's result in this try.
struct Done {
    recipient: String,
    store: String,
    kind: &'static str,
    folder: &'static str,
    location: String,
    outcome: DeliveryOutcome,
}

impl Deliver {
    /// A deliver stage writing default Maildirs under `{data_dir}/mail/`.
    pub fn new(
        log: EventLog,
        directory: Directory,
        data_dir: PathBuf,
        hostname: &str,
        config: DeliverConfig,
    ) -> Self {
        // Maildir file names end in the host name; '/' and ':' would break them.
        let authserv_id = hostname.to_owned();
        let lmtp = Arc::new(LmtpClient::new(
            hostname,
            config.lmtp_max_connections,
            config.lmtp_timeout,
        ));
        let hostname = hostname.replace(['/', ':'], "_");
        Deliver {
            log,
            directory,
            data_dir,
            hostname,
            authserv_id,
            name: DELIVER_CONSUMER,
            config,
            lmtp,
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

    /// A Maildir copy, with the user's quota checked first.
    async fn write_maildir(
        &self,
        copy: &Copy,
        path: Option<PathBuf>,
        name: &str,
        check_first: bool,
    ) -> Result<(String, DeliveryOutcome), HandlerError> {
        let root = match path {
            Some(path) => path,
            None => self.default_maildir(&Address::parse(&copy.recipient).map_err(permanent)?),
        };
        let maildir = Maildir::new(root.clone());
        let (folder, name, body, quota_bytes) = (
            copy.folder,
            name.to_owned(),
            copy.body.clone(),
            copy.quota_bytes,
        );
        let written = tokio::task::spawn_blocking(move || {
            if check_first {
                if let Some(existing) = maildir.find(folder, &name)? {
                    return Ok(Some(Written::AlreadyThere(existing)));
                }
            }
            if let Some(limit) = quota_bytes {
                // The folders must exist before their use can be summed.
                maildir.ensure()?;
                if !quota::fits(&root, limit, body.len() as u64)? {
                    return Ok(None);
                }
            }
            let written = maildir.write(folder, &name, &body, false)?;
            if quota_bytes.is_some() {
                if let Written::New(_) = written {
                    quota::add(&root, body.len() as u64)?;
                }
            }
            Ok::<_, std::io::Error>(Some(written))
        })
        .await
        .map_err(transient)?
        .map_err(|e| transient(format!("cannot write the copy for {}: {e}", copy.recipient)))?;
        Ok(match written {
            Some(Written::New(path)) => (path.display().to_string(), DeliveryOutcome::Delivered),
            Some(Written::AlreadyThere(path)) => (
                path.display().to_string(),
                DeliveryOutcome::AlreadyDelivered,
            ),
            None => (
                String::new(),
                DeliveryOutcome::Deferred {
                    reason: "452 4.2.2 mailbox full (Maildir++ quota)".to_owned(),
                },
            ),
        })
    }

    /// The copies of one LMTP server: those with the same bytes go in one transaction,
    /// recipients pipelined; each gets its own reply.
    async fn deliver_lmtp(
        &self,
        server: &LmtpAddress,
        sender: &str,
        message_id: &str,
        copies: Vec<&Copy>,
    ) -> Result<Vec<(String, Result<RcptReply, String>)>, HandlerError> {
        let store = Store::Lmtp(server.clone()).to_string();
        // The copies with the same bytes, each as (recipient, RCPT address, folder).
        type Batch = (Vec<u8>, Vec<(String, String, &'static str)>);
        let mut batches: Vec<Batch> = Vec::new();
        for copy in copies {
            let mut body = format!(
                "{DELIVERY_ID_HEADER}: {}\r\n",
                derive_id(message_id, copy.folder)
            )
            .into_bytes();
            let mut rcpt = copy.recipient.clone();
            if copy.folder != "INBOX" {
                match self.config.folder_delivery {
                    FolderDelivery::Detail => {
                        if let Some((local, domain)) = copy.recipient.rsplit_once('@') {
                            rcpt = format!("{local}+{}@{domain}", copy.folder);
                        }
                    }
                    FolderDelivery::Header => body.extend_from_slice(
                        format!("{}: {}\r\n", self.config.folder_header, copy.folder).as_bytes(),
                    ),
                }
            }
            body.extend_from_slice(&to_crlf(&copy.body));
            let entry = (copy.recipient.clone(), rcpt, copy.folder);
            match batches.iter_mut().find(|(b, _)| *b == body) {
                Some((_, recipients)) => recipients.push(entry),
                None => batches.push((body, vec![entry])),
            }
        }
        let mut results = Vec::new();
        for (body, recipients) in batches {
            // Nothing is sent without its `sending` marks: a batch whose marks cannot
            // be written waits for the next try, and the batches done stay done.
            let mut marked = Ok(());
            for (recipient, _, folder) in &recipients {
                if let Err(error) = self
                    .directory
                    .mark_delivery(
                        message_id,
                        recipient,
                        &mark_key(&store, folder),
                        MarkState::Sending,
                        None,
                        false,
                    )
                    .await
                {
                    marked = Err(format!("cannot record the copy before sending it: {error}"));
                    break;
                }
            }
            if let Err(why) = marked {
                for (recipient, _, _) in recipients {
                    results.push((recipient, Err(why.clone())));
                }
                continue;
            }
            let rcpts: Vec<String> = recipients.iter().map(|(_, r, _)| r.clone()).collect();
            match self.lmtp.deliver(server, sender, &rcpts, &body).await {
                Ok(replies) => {
                    for ((recipient, _, _), reply) in recipients.into_iter().zip(replies) {
                        results.push((recipient, Ok(reply)));
                    }
                }
                Err(e) => {
                    for (recipient, _, _) in recipients {
                        results.push((recipient, Err(e.to_string())));
                    }
                }
            }
        }
        Ok(results)
    }

    /// A full mailbox past its grace period (counted from the first "full") fails.
    fn over_grace(&self, mark: Option<&DeliveryMark>, now: i64) -> bool {
        mark.and_then(|m| m.first_full_at)
            .is_some_and(|first| now - first >= self.config.quota_grace.as_secs() as i64)
    }
}

/// A copy's key among the marks: the store and the folder, so that a recovered copy
/// (Quarantine first, the inbox later) is a copy of its own.
fn mark_key(store: &str, folder: &str) -> String {
    format!("{store} {folder}")
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
                strip_pampa_headers(&to_lf(&body))
            };
            // On a first try nothing can exist yet; on any later try (or a dead-letter
            // retry) an earlier try may have written some copies before it failed. A
            // recovery may be asked for twice, or for a copy already in the inbox.
            let check_first = attempt > 1
                || event.header(subjects::HEADER_RETRY).is_some()
                || head.event_type == RECOVERED_EVENT_TYPE;
            let secs = analysis.received.received_at.timestamp();
            let mut done: Vec<Done> = Vec::new();
            let mut copies: Vec<Copy> = Vec::new();
            for recipient in &analysis.recipients {
                let address = &recipient.address;
                let decision = recipient.decision.clone().unwrap_or_else(unjudged);
                let user = self
                    .directory
                    .find_user(&Address::parse(address).map_err(permanent)?)
                    .await
                    .map_err(directory_error)?;
                let (stores, quota_bytes) = match &user {
                    None => {
                        done.push(Done {
                            recipient: address.clone(),
                            store: String::new(),
                            kind: "none",
                            folder: "",
                            location: String::new(),
                            outcome: DeliveryOutcome::Failed {
                                reason: format!("user {address} no longer exists"),
                            },
                        });
                        continue;
                    }
                    Some(user) => match parse_location(user.mailbox_location.as_deref()) {
                        Ok(stores) => (stores, user.quota_bytes),
                        Err(reason) => {
                            done.push(Done {
                                recipient: address.clone(),
                                store: user.mailbox_location.clone().unwrap_or_default(),
                                kind: "none",
                                folder: "",
                                location: String::new(),
                                outcome: DeliveryOutcome::Failed { reason },
                            });
                            continue;
                        }
                    },
                };
                let Some(folder) = decision.disposition.folder() else {
                    done.push(Done {
                        recipient: address.clone(),
                        store: stores[0].to_string(),
                        kind: stores[0].kind(),
                        folder: "",
                        location: String::new(),
                        outcome: DeliveryOutcome::Discarded {
                            reason: decision.reason.clone(),
                        },
                    });
                    continue;
                };
                let copy_body = if scored {
                    let mut copy = spam_headers(&analysis, recipient, &decision).into_bytes();
                    copy.extend_from_slice(&body);
                    copy
                } else {
                    body.clone()
                };
                let copy_body = Arc::new(copy_body);
                for store in stores {
                    copies.push(Copy {
                        recipient: address.clone(),
                        store,
                        folder,
                        body: copy_body.clone(),
                        quota_bytes,
                    });
                }
            }
            // The marks say what each store has. Maildir needs them only on a later try
            // (a copy's file name finds it otherwise); LMTP always, since a store may
            // have the copy from a try of another event of the same message.
            let any_lmtp = copies.iter().any(|c| matches!(c.store, Store::Lmtp(_)));
            let marks: HashMap<(String, String), DeliveryMark> = if check_first || any_lmtp {
                self.directory
                    .delivery_marks(&message_id)
                    .await
                    .map_err(directory_error)?
                    .into_iter()
                    .map(|m| ((m.recipient.clone(), m.store.clone()), m))
                    .collect()
            } else {
                HashMap::new()
            };
            let now = chrono::Utc::now().timestamp();
            let sender = analysis.received.mail_from.clone();
            // Copies a store has (or refused for good) on an earlier try are reported,
            // not handed over again.
            let mut lmtp: HashMap<LmtpAddress, Vec<&Copy>> = HashMap::new();
            for copy in &copies {
                let store_name = copy.store.to_string();
                let mark = marks.get(&(copy.recipient.clone(), mark_key(&store_name, copy.folder)));
                let finished = match mark.map(|m| m.state) {
                    Some(MarkState::Delivered) => Some(DeliveryOutcome::AlreadyDelivered),
                    Some(MarkState::Failed) => Some(DeliveryOutcome::Failed {
                        reason: mark.and_then(|m| m.detail.clone()).unwrap_or_default(),
                    }),
                    _ => None,
                };
                if let Some(outcome) = finished {
                    done.push(Done {
                        recipient: copy.recipient.clone(),
                        store: store_name,
                        kind: copy.store.kind(),
                        folder: copy.folder,
                        location: mark.and_then(|m| m.detail.clone()).unwrap_or_default(),
                        outcome,
                    });
                    continue;
                }
                match &copy.store {
                    Store::Maildir(path) => {
                        let name = format!(
                            "{secs}.M{}.{}",
                            derive_id(&message_id, &copy.recipient).replace('-', ""),
                            self.hostname
                        );
                        // A Maildir that cannot be written (a full disk, a permission)
                        // defers this copy only: the other stores go on.
                        let (location, mut outcome) = match self
                            .write_maildir(copy, path.clone(), &name, check_first)
                            .await
                        {
                            Ok(written) => written,
                            Err(error) => (
                                String::new(),
                                self.settle_deferral(&message_id, copy, &store_name, mark, now, error.to_string(), false)
                                    .await?,
                            ),
                        };
                        if let DeliveryOutcome::Deferred { reason } = &outcome {
                            let reason = reason.clone();
                            outcome = self
                                .settle_deferral(&message_id, copy, &store_name, mark, now, reason, true)
                                .await?;
                        }
                        done.push(Done {
                            recipient: copy.recipient.clone(),
                            store: store_name,
                            kind: "maildir",
                            folder: copy.folder,
                            location,
                            outcome,
                        });
                    }
                    Store::Lmtp(server) => lmtp.entry(server.clone()).or_default().push(copy),
                }
            }
            for (server, server_copies) in lmtp {
                let store_name = Store::Lmtp(server.clone()).to_string();
                let by_recipient: HashMap<String, &Copy> = server_copies
                    .iter()
                    .map(|c| (c.recipient.clone(), *c))
                    .collect();
                let results = self
                    .deliver_lmtp(&server, &sender, &message_id, server_copies)
                    .await?;
                for (recipient, result) in results {
                    let Some(copy) = by_recipient.get(&recipient) else {
                        continue;
                    };
                    let mark = marks.get(&(recipient.clone(), mark_key(&store_name, copy.folder)));
                    let outcome = match result {
                        Ok(reply) if reply.is_success() => {
                            self.mark(&message_id, copy, &store_name, MarkState::Delivered, &reply.text, false)
                                .await;
                            DeliveryOutcome::Delivered
                        }
                        // A full mailbox is temporary for the grace period, whatever
                        // class the server gives it (Dovecot answers 552 5.2.2 unless
                        // quota_full_tempfail is set): issue 12's rule, not the
                        // server's default.
                        Ok(reply) if reply.is_permanent() && !reply.is_over_quota() => {
                            self.mark(&message_id, copy, &store_name, MarkState::Failed, &reply.text, false)
                                .await;
                            DeliveryOutcome::Failed { reason: reply.text }
                        }
                        Ok(reply) => {
                            let quota = reply.is_over_quota();
                            self.settle_deferral(&message_id, copy, &store_name, mark, now, reply.text, quota)
                                .await?
                        }
                        Err(why) => {
                            self.settle_deferral(&message_id, copy, &store_name, mark, now, why, false)
                                .await?
                        }
                    };
                    done.push(Done {
                        recipient,
                        store: store_name.clone(),
                        kind: "lmtp",
                        folder: copy.folder,
                        location: String::new(),
                        outcome,
                    });
                }
            }
            let mut deferred = Vec::new();
            let mut deliveries = Vec::with_capacity(done.len());
            for d in done {
                let label = match &d.outcome {
                    DeliveryOutcome::Delivered => "delivered",
                    DeliveryOutcome::AlreadyDelivered => "already_delivered",
                    DeliveryOutcome::Discarded { .. } => "discarded",
                    DeliveryOutcome::Failed { .. } => "failed",
                    DeliveryOutcome::Deferred { reason } => {
                        ::metrics::counter!(metrics::RETRIES_TOTAL, "store" => d.kind).increment(1);
                        deferred.push(format!("{} at {}: {reason}", d.recipient, d.store));
                        "deferred"
                    }
                };
                let folder_label = if d.folder.is_empty() { "none" } else { d.folder };
                ::metrics::counter!(metrics::COPIES_TOTAL, "store" => d.kind, "folder" => folder_label, "outcome" => label)
                    .increment(1);
                tracing::debug!(recipient = %d.recipient, store = %d.store, outcome = label, "Copy handled.");
                deliveries.push(RecipientDelivery {
                    recipient: d.recipient,
                    store: d.store,
                    folder: d.folder.to_owned(),
                    location: d.location,
                    outcome: d.outcome,
                });
            }
            let record = MailDelivered {
                message_id,
                deliveries,
            };
            if deferred.is_empty() {
                let delivered = Envelope::caused_by(&head, "deliver", record);
                return Ok(vec![OutgoingEvent::from_envelope(&delivered).map_err(permanent)?]);
            }
            // Some copy waits: this try's results go to the log now (trace shows every
            // try), and the runner tries the message again with backoff. Copies done
            // now are marked, so the next try skips them.
            self.publish_try(&head, record, attempt).await;
            Err(transient(format!(
                "{} cop{} to try again: {}",
                deferred.len(),
                if deferred.len() == 1 { "y" } else { "ies" },
                deferred.join("; ")
            )))
        }
        .instrument(span)
        .await
    }
}

impl Deliver {
    /// Records a copy's state after the store answered. A failed write is logged, not
    /// fatal: the store has answered, and failing the try now would only send again
    /// what the store already has (the mark stays `sending`; see the crate's doc).
    async fn mark(
        &self,
        message_id: &str,
        copy: &Copy,
        store: &str,
        state: MarkState,
        detail: &str,
        full: bool,
    ) {
        let key = mark_key(store, copy.folder);
        if let Err(error) = self
            .directory
            .mark_delivery(message_id, &copy.recipient, &key, state, Some(detail), full)
            .await
        {
            tracing::warn!(%error, recipient = %copy.recipient, store, state = state.as_str(), "Cannot record a copy's state.");
        }
    }

    /// A copy the store deferred: the mark keeps the first time; a full mailbox past
    /// its grace period (counted from its first "full") fails for good.
    #[allow(clippy::too_many_arguments)]
    async fn settle_deferral(
        &self,
        message_id: &str,
        copy: &Copy,
        store: &str,
        mark: Option<&DeliveryMark>,
        now: i64,
        reason: String,
        over_quota: bool,
    ) -> Result<DeliveryOutcome, HandlerError> {
        if over_quota && self.over_grace(mark, now) {
            let reason = format!(
                "mailbox still full after {}: {reason}",
                humantime_serde::re::humantime::format_duration(self.config.quota_grace)
            );
            ::metrics::counter!(metrics::OVER_QUOTA_TOTAL, "store" => copy.store.kind(), "result" => "failed").increment(1);
            self.mark(message_id, copy, store, MarkState::Failed, &reason, true)
                .await;
            return Ok(DeliveryOutcome::Failed { reason });
        }
        if over_quota {
            ::metrics::counter!(metrics::OVER_QUOTA_TOTAL, "store" => copy.store.kind(), "result" => "deferred").increment(1);
        }
        self.mark(
            message_id,
            copy,
            store,
            MarkState::Deferred,
            &reason,
            over_quota,
        )
        .await;
        Ok(DeliveryOutcome::Deferred { reason })
    }

    /// Publishes one try's `mail.delivered` with its own id (tries differ).
    async fn publish_try(&self, head: &EnvelopeHead, record: MailDelivered, attempt: u32) {
        let mut event = Envelope::caused_by(head, "deliver", record);
        event.id = derive_id(&event.id, &format!("try {attempt}"));
        match OutgoingEvent::from_envelope(&event) {
            Ok(outgoing) => {
                if let Err(error) = self.log.publish(&outgoing).await {
                    tracing::warn!(%error, "Cannot record a delivery try; the copies are retried anyway.");
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot encode a delivery try."),
        }
    }
}
