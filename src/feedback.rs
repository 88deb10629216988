//! `pampa feedback spam|ham MESSAGE-ID --user ADDR`: a recipient's verdict, recorded as
//! a `mail.feedback` event. Replay takes these as labels (`--labels feedback`), and
//! `pampa train --from-feedback` trains the classifier on them. The IMAP side can
//! publish the same event when a user moves mail into or out of Spam.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pampa_bus::{EventLog, OutgoingEvent, StoredEvent};
use pampa_schemas::{
    decode, decode_analysis, new_id, Disposition, Envelope, Event, MailAnalysis, MailFeedback,
    MailReceived, Verdict, ANALYSIS_EVENT_TYPES, RECOVERED_EVENT_TYPE,
};

use crate::{config::Config, trace};

/// `spam` or `ham` on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VerdictArg {
    /// It is unwanted.
    Spam,
    /// It is wanted.
    Ham,
}

impl From<VerdictArg> for Verdict {
    fn from(value: VerdictArg) -> Self {
        match value {
            VerdictArg::Spam => Verdict::Spam,
            VerdictArg::Ham => Verdict::Ham,
        }
    }
}

#[derive(Args)]
pub struct FeedbackArgs {
    /// What the user says the message is.
    verdict: VerdictArg,
    /// pampa's id (from "250 ... queued as ID") or the message's Message-ID header.
    message_id: String,
    /// The recipient whose verdict this is.
    #[arg(long, value_name = "ADDR")]
    user: String,
}

/// One message as the log knows it: what was received and the last analysis.
pub(crate) struct Message {
    /// pampa's id.
    pub id: String,
    /// The `mail.received` event.
    pub received: MailReceived,
    /// The last analysis on the way to deliver (normally `mail.scored`), with its event.
    pub analysis: Option<(StoredEvent, MailAnalysis)>,
}

impl Message {
    /// Reads one message's history; `id` is pampa's id or a `Message-ID` header.
    pub(crate) async fn load(log: &EventLog, id: &str) -> Result<Message> {
        let message_id = trace::resolve(log, id).await?;
        let events = trace::history(log, &message_id).await?;
        let mut received = None;
        let mut analysis = None;
        for event in events {
            let head = pampa_schemas::decode_head(&event.payload)
                .with_context(|| format!("cannot decode event {}", event.id))?;
            if head.event_type == "mail.received" {
                received = Some(
                    decode::<MailReceived>(&event.payload)
                        .with_context(|| format!("cannot decode event {}", event.id))?
                        .payload,
                );
            } else if ANALYSIS_EVENT_TYPES.contains(&head.event_type.as_str())
                && head.event_type != RECOVERED_EVENT_TYPE
            {
                let (_, decoded) = decode_analysis(&event.payload)
                    .with_context(|| format!("cannot decode event {}", event.id))?;
                analysis = Some((event, decoded));
            }
        }
        let Some(received) = received else {
            bail!("the log no longer holds how message {message_id} was received (retention)");
        };
        Ok(Message {
            id: message_id,
            received,
            analysis,
        })
    }

    /// The recipient as the message spells it, or an error naming the recipients.
    pub(crate) fn recipient(&self, address: &str) -> Result<&str> {
        match self
            .received
            .recipients
            .iter()
            .find(|r| r.eq_ignore_ascii_case(address.trim()))
        {
            Some(r) => Ok(r),
            None => bail!(
                "{address} was not a recipient of message {}; its recipients: {}",
                self.id,
                self.received.recipients.join(", ")
            ),
        }
    }

    /// What was decided for one recipient, if the message was scored.
    pub(crate) fn disposition_of(&self, recipient: &str) -> Option<Disposition> {
        let (_, analysis) = self.analysis.as_ref()?;
        analysis
            .recipients
            .iter()
            .find(|r| r.address == recipient)?
            .decision
            .as_ref()
            .map(|d| d.disposition)
    }
}

/// Every verdict recorded since `since`, decoded, in log order: what replay's
/// `--labels feedback` and `pampa train --from-feedback` read.
pub(crate) fn verdicts(
    log: &EventLog,
    since: chrono::DateTime<chrono::Utc>,
) -> futures::stream::BoxStream<'static, Result<MailFeedback>> {
    use futures::StreamExt;
    log.replay_stream(MailFeedback::EVENT_TYPE, since)
        .map(|event| {
            let event = event?;
            Ok(decode::<MailFeedback>(&event.payload)
                .with_context(|| format!("cannot decode feedback event {}", event.id))?
                .payload)
        })
        .boxed()
}

/// Records a user's verdict on a message.
pub async fn feedback(config: &Config, args: &FeedbackArgs) -> Result<()> {
    let log = EventLog::open_tool(&config.bus, &config.data_dir)
        .await
        .with_context(|| format!("cannot open the event log ({})", config.bus.url))?;
    let message = Message::load(&log, &args.message_id).await?;
    let user = message.recipient(&args.user)?.to_owned();
    let verdict = Verdict::from(args.verdict);
    let mut event = Envelope::root(
        new_id(),
        "cli",
        MailFeedback {
            message_id: message.id.clone(),
            user: user.clone(),
            verdict,
            origin: "cli".to_owned(),
        },
    );
    // Part of the message's history, so `pampa trace` shows it.
    event.correlation_id = message.id.clone();
    let outgoing = OutgoingEvent::from_envelope(&event)?;
    log.publish(&outgoing)
        .await
        .context("cannot record the feedback")?;
    println!(
        "Recorded: {user} says message {} is {} (event {}).",
        message.id,
        verdict.as_str(),
        event.id
    );
    match (verdict, message.disposition_of(&user)) {
        (Verdict::Ham, Some(d @ (Disposition::Discard | Disposition::Quarantine))) => println!(
            "It was {}ed; `pampa recover {} --to {user}` puts it in the inbox.",
            if d == Disposition::Discard {
                "discard"
            } else {
                "quarantin"
            },
            message.id
        ),
        (Verdict::Ham, Some(Disposition::Spam)) => {
            println!("It is in {user}'s Spam folder; the user can move it to the inbox.")
        }
        _ => {}
    }
    Ok(())
}
