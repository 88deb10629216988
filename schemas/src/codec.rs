//! The wire form of events: rmp-serde's named encoding.
//!
//! Named encoding writes maps keyed by field name, so a reader skips fields it does not
//! know and an added optional field is not a breaking change.

use serde::de::{DeserializeOwned, IgnoredAny};

use crate::{subjects, Envelope, Event};

/// An event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload did not serialize.
    #[error("cannot encode event: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not an event of the expected shape.
    #[error("cannot decode event: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The bytes are an event, but of another type.
    #[error("expected a {expected} event, found {found}")]
    WrongType {
        /// The type the reader wanted.
        expected: &'static str,
        /// The type on the wire.
        found: String,
    },
    /// The event's schema is newer than this build understands.
    #[error(
        "{event_type} schema version {found} is newer than {known}, the newest this build reads"
    )]
    TooNew {
        /// The event type.
        event_type: String,
        /// The version on the wire.
        found: u16,
        /// The newest version this build knows.
        known: u16,
    },
}

/// Encodes an envelope with field names.
pub fn encode<P: Event>(event: &Envelope<P>) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(event)?)
}

/// Decodes an envelope of a known payload type, refusing other types and newer schemas.
pub fn decode<P: Event>(bytes: &[u8]) -> Result<Envelope<P>, CodecError> {
    decode_view::<P, P>(bytes)
}

/// Decodes an event of type `E` into `V`, a partial view of its payload that declares
/// only the fields a reader needs: serde skips the rest without allocating them, which
/// is what makes a replay over millions of events fast. Refuses other types and newer
/// schemas, as [`decode`] does.
pub fn decode_view<E: Event, V: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<V>, CodecError> {
    // One pass in the common case; the header is read apart only to explain a failure.
    let event: Envelope<V> = match rmp_serde::from_slice(bytes) {
        Ok(event) => event,
        Err(error) => {
            check_head::<E>(&decode_head(bytes)?)?;
            return Err(error.into());
        }
    };
    check_head::<E>(&event)?;
    Ok(event)
}

fn check_head<E: Event>(head: &Envelope<impl Sized>) -> Result<(), CodecError> {
    if !E::is_event_type(&head.event_type) {
        return Err(CodecError::WrongType {
            expected: E::EVENT_TYPE,
            found: head.event_type.clone(),
        });
    }
    if head.schema_version > E::SCHEMA_VERSION {
        return Err(CodecError::TooNew {
            event_type: head.event_type.clone(),
            found: head.schema_version,
            known: E::SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Decodes a batch event `B` whose versions before `first_batch_version` carried one
/// record `R` each: those read as a batch of one, made by `wrap` (given the envelope's
/// time), so readers handle one shape. The upcaster of `dns.query` and `access.auth`.
pub(crate) fn decode_batch<B: Event, R: DeserializeOwned>(
    bytes: &[u8],
    first_batch_version: u16,
    wrap: impl FnOnce(R, chrono::DateTime<chrono::Utc>) -> B,
) -> Result<Envelope<B>, CodecError> {
    let head = decode_head(bytes)?;
    if B::is_event_type(&head.event_type) && head.schema_version < first_batch_version {
        let (mut head, one) = rmp_serde::from_slice::<Envelope<R>>(bytes)?.split();
        head.schema_version = B::SCHEMA_VERSION;
        let batch = wrap(one, head.occurred_at);
        return Ok(head.wrap(batch));
    }
    decode::<B>(bytes)
}

/// The envelope without its payload: enough for tracing, dead letters and routing.
/// Serde skips the payload of whatever type it is.
pub type EnvelopeHead = Envelope<IgnoredAny>;

/// Decodes only the envelope fields, whatever the payload is.
pub fn decode_head(bytes: &[u8]) -> Result<EnvelopeHead, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// The NATS headers of an event, so tools can route and inspect without decoding it.
pub fn headers<P>(event: &Envelope<P>) -> Vec<(&'static str, String)> {
    vec![
        (subjects::HEADER_MSG_ID, event.id.clone()),
        (subjects::HEADER_EVENT_TYPE, event.event_type.clone()),
        (
            subjects::HEADER_SCHEMA_VERSION,
            event.schema_version.to_string(),
        ),
        (
            subjects::HEADER_CORRELATION_ID,
            event.correlation_id.clone(),
        ),
    ]
}
