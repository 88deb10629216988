//! `pampa recover MESSAGE-ID --to ADDR`: delivers a discarded or quarantined copy to
//! the recipient's inbox after all, while the log still holds its body.
//!
//! The command does not write to the mailbox itself: it publishes `mail.recovered` (the
//! scored analysis with only that recipient, now decided for the inbox), and deliver
//! writes the copy as it writes any other, idempotently. So the recovery is part of the
//! message's history, and works the same whichever host holds the mailboxes.

use anyhow::{bail, Context, Result};
use clap::Args;
use pampa_bus::{BusError, EventLog, OutgoingEvent};
use pampa_schemas::{derive_id, Decision, Disposition, Envelope, RECOVERED_EVENT_TYPE};

use crate::{config::Config, feedback::Message};

#[derive(Args)]
pub struct RecoverArgs {
    /// pampa's id (from "250 ... queued as ID") or the message's Message-ID header.
    message_id: String,
    /// The recipient whose copy goes to the inbox.
    #[arg(long, value_name = "ADDR")]
    to: String,
}

/// Who asked, for the audit trail: the user behind sudo, else the login user.
fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "an operator".to_owned())
}

/// Queues the recovery of one recipient's copy.
pub async fn recover(config: &Config, args: &RecoverArgs) -> Result<()> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let message = Message::load(&log, &args.message_id).await?;
    let recipient = message.recipient(&args.to)?.to_owned();
    let Some((event, analysis)) = &message.analysis else {
        bail!(
            "message {} has not been through the stages yet; deliver will handle it",
            message.id
        );
    };
    let was = match message.disposition_of(&recipient) {
        Some(d @ (Disposition::Discard | Disposition::Quarantine)) => d,
        Some(Disposition::Spam) => bail!(
            "message {} went to {recipient}'s Spam folder, not away: the user can move it \
             to the inbox",
            message.id
        ),
        Some(Disposition::Inbox) | None => bail!(
            "message {} was delivered to {recipient}'s inbox; there is nothing to recover",
            message.id
        ),
    };
    match log.get_blob(&message.received.blob).await {
        Ok(_) => {}
        Err(BusError::BlobMissing(_)) => bail!(
            "the body of message {} is no longer retained, so it cannot be recovered",
            message.id
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read the body of {}", message.id)),
    }
    let mut recovered = analysis.clone();
    recovered.recipients.retain(|r| r.address == recipient);
    for r in &mut recovered.recipients {
        r.decision = Some(Decision {
            disposition: Disposition::Inbox,
            reason: format!("recovered from {} by {}", was.as_str(), operator()),
        });
    }
    let head = pampa_schemas::decode_head(&event.payload)?;
    let mut envelope = Envelope::caused_by_as(&head, "cli", RECOVERED_EVENT_TYPE, recovered);
    // One id per (scored event, recipient): asking twice is deduplicated by the log, and
    // after its window by deliver, which finds the copy already in the inbox.
    envelope.id = derive_id(&event.id, &format!("recover:{recipient}"));
    let outgoing = OutgoingEvent::from_envelope(&envelope)?;
    log.publish(&outgoing)
        .await
        .context("cannot queue the recovery")?;
    println!(
        "Queued: message {} goes to {recipient}'s inbox (was {}; event {}). \
         `pampa trace {}` shows when deliver has written it.",
        message.id,
        was.as_str(),
        envelope.id,
        message.id
    );
    Ok(())
}
