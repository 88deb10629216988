//! What goes into the log and what comes out of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pampa_schemas::{codec, subjects, Envelope, Event};

use crate::{embedded, jetstream, BusError};

/// An encoded event, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// The subject, usually the event type.
    pub subject: String,
    /// The event id; the log drops a second event with the same id.
    pub id: String,
    /// Headers besides the id (event type, schema version, correlation id…).
    pub headers: Vec<(String, String)>,
    /// The encoded envelope.
    pub payload: Vec<u8>,
}

impl OutgoingEvent {
    /// Encodes an envelope and its routing headers.
    pub fn from_envelope<P: Event>(event: &Envelope<P>) -> Result<Self, BusError> {
        Ok(OutgoingEvent {
            subject: event.event_type.clone(),
            id: event.id.clone(),
            headers: codec::headers(event)
                .into_iter()
                .filter(|(name, _)| *name != subjects::HEADER_MSG_ID)
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            payload: codec::encode(event)?,
        })
    }

    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The log's receipt for a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Position in the log (stream sequence).
    pub sequence: u64,
    /// True when an event with the same id was already stored; nothing new was written.
    pub duplicate: bool,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log.
    pub sequence: u64,
    /// The subject.
    pub subject: String,
    /// The event id.
    pub id: String,
    /// Headers besides the id.
    pub headers: Vec<(String, String)>,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// When the log stored it.
    pub published_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One event handed to a consumer. It must be settled by exactly one of
/// [`ack`](Delivery::ack), [`nak`](Delivery::nak) or [`term`](Delivery::term);
/// dropping it unsettled makes it visible again after the ack wait.
pub struct Delivery {
    /// The event.
    pub event: StoredEvent,
    /// Which try this is, from 1.
    pub attempt: u32,
    /// Events still waiting behind this one for the same consumer.
    pub pending: u64,
    pub(crate) handle: AckHandle,
}

pub(crate) enum AckHandle {
    Embedded(embedded::EmbeddedAck),
    JetStream(async_nats::jetstream::Message),
}

impl Delivery {
    /// Done with it: never hand it out again.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.handle {
            AckHandle::Embedded(h) => h.ack().await,
            AckHandle::JetStream(m) => {
                jetstream::settle(&m, async_nats::jetstream::AckKind::Ack).await
            }
        }
    }

    /// Failed for now: hand it out again after `delay`.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.handle {
            AckHandle::Embedded(h) => h.nak(delay).await,
            AckHandle::JetStream(m) => {
                jetstream::settle(&m, async_nats::jetstream::AckKind::Nak(Some(delay))).await
            }
        }
    }

    /// Failed for good: never hand it out again (it is in `dead.<stage>` by now).
    pub async fn term(self) -> Result<(), BusError> {
        match self.handle {
            AckHandle::Embedded(h) => h.ack().await,
            AckHandle::JetStream(m) => {
                jetstream::settle(&m, async_nats::jetstream::AckKind::Term).await
            }
        }
    }

    /// Still working: push the redelivery deadline back by the ack wait.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        match &self.handle {
            AckHandle::Embedded(h) => h.in_progress().await,
            AckHandle::JetStream(m) => {
                jetstream::settle(m, async_nats::jetstream::AckKind::Progress).await
            }
        }
    }
}
