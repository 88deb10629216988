//! The envelope: what every event carries besides its payload.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// A payload type that can travel in an [`Envelope`].
///
/// The event type doubles as the subject, so a consumer filter and a stream subject
/// can be read straight off the type.
pub trait Event: Serialize + DeserializeOwned {
    /// Past-tense, dotted name such as `mail.received`.
    const EVENT_TYPE: &'static str;
    /// Bumped on a breaking change, together with an upcaster in this crate.
    const SCHEMA_VERSION: u16;

    /// Whether events of `event_type` carry this payload. A payload that travels under
    /// several names (one per stage) widens this.
    fn is_event_type(event_type: &str) -> bool {
        event_type == Self::EVENT_TYPE
    }
}

/// One immutable fact, with the ids that tie it to its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Unique id of this event; also the `Nats-Msg-Id`, so a republish is dropped.
    pub id: String,
    /// Past-tense type, such as `mail.received`.
    pub event_type: String,
    /// Version of the payload's schema.
    pub schema_version: u16,
    /// The root of the history: the SMTP message, RADIUS session or DNS query.
    pub correlation_id: String,
    /// The event this one was derived from; `None` for a root event.
    #[serde(default)]
    pub causation_id: Option<String>,
    /// The role that produced the event (`ingest`, `deliver`, …).
    pub source: String,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// The event's own data.
    pub payload: P,
}

impl<P: Event> Envelope<P> {
    /// A root event: its own id is also its correlation id.
    pub fn root(id: String, source: &str, payload: P) -> Self {
        Envelope {
            correlation_id: id.clone(),
            id,
            event_type: P::EVENT_TYPE.to_owned(),
            schema_version: P::SCHEMA_VERSION,
            causation_id: None,
            source: source.to_owned(),
            occurred_at: Utc::now(),
            payload,
        }
    }

    /// An event caused by `parent`, with an id derived from the parent's id and the
    /// producing role, so that a stage that crashes and runs again publishes the same id.
    pub fn caused_by<Q>(parent: &Envelope<Q>, source: &str, payload: P) -> Self {
        Self::caused_by_as(parent, source, P::EVENT_TYPE, payload)
    }

    /// Like [`Envelope::caused_by`], under one of the payload's other event types.
    pub fn caused_by_as<Q>(
        parent: &Envelope<Q>,
        source: &str,
        event_type: &str,
        payload: P,
    ) -> Self {
        Envelope {
            id: derive_id(&parent.id, source),
            event_type: event_type.to_owned(),
            schema_version: P::SCHEMA_VERSION,
            correlation_id: parent.correlation_id.clone(),
            causation_id: Some(parent.id.clone()),
            source: source.to_owned(),
            occurred_at: Utc::now(),
            payload,
        }
    }
}

impl<P> Envelope<P> {
    /// The same envelope around `f(payload)`.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Envelope<Q> {
        Envelope {
            id: self.id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            source: self.source,
            occurred_at: self.occurred_at,
            payload: f(self.payload),
        }
    }

    /// The envelope apart from its payload, and the payload: to put the envelope
    /// around something else (an upcast payload, one record of a batch).
    pub fn split(self) -> (Envelope<()>, P) {
        let mut payload = None;
        let head = self.map(|p| payload = Some(p));
        match payload {
            Some(payload) => (head, payload),
            None => unreachable!("map calls its function once"),
        }
    }
}

impl Envelope<()> {
    /// This envelope around `payload`.
    pub fn wrap<P>(self, payload: P) -> Envelope<P> {
        self.map(|()| payload)
    }
}

/// A fresh, time-ordered id (UUIDv7), so ids sort roughly by arrival.
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Namespace for derived ids; fixed forever, or dedup across versions breaks.
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f3b_0d8e_5a1c_4e57_9a52_8c1f_2d4b_7e90);

/// The deterministic id of the event that `stage` derives from `input_id` (UUIDv5).
pub fn derive_id(input_id: &str, stage: &str) -> String {
    let mut name = Vec::with_capacity(input_id.len() + stage.len() + 1);
    name.extend_from_slice(input_id.as_bytes());
    name.push(b'/');
    name.extend_from_slice(stage.as_bytes());
    Uuid::new_v5(&DERIVED_ID_NAMESPACE, &name).to_string()
}
