//! Accounting records made durable in batches and answered in log order.
//!
//! An Accounting-Response may only go out once its record is durable (RFC 2866 §4.1),
//! so every record waits for the log. Waiting in a task per record cost a spawn, a
//! publish command, a reply channel and a wake-up each, and at 64 records in flight the
//! rate is the window divided by that path's latency. Here the receive loop only queues
//! the record with its reply already built; one writer publishes whatever has queued as
//! one `publish_batch` (one transaction on the embedded log, pipelined publishes on
//! JetStream), keeps a few batches in flight so the next one forms while the last one
//! commits, and, as each batch is confirmed in order, applies it to the sessions
//! projection and sends its replies.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use futures::{stream::FuturesOrdered, StreamExt};
use pampa_bus::{BusError, OutgoingEvent, PublishAck};
use pampa_schemas::AccessAcct;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, OwnedSemaphorePermit},
};

use crate::{directory::RadiusDirectory, metrics, server::Shared};

/// Most records in one published batch.
const BATCH: usize = 1024;
/// Batches being published at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// A record waiting to be durable, with everything needed to answer it then. It travels
/// with its encoded event: `(OutgoingEvent, PendingRecord)`.
pub(crate) struct PendingRecord {
    pub(crate) record: AccessAcct,
    /// The Accounting-Response, built before the publish and sent only after its ack.
    pub(crate) reply: Vec<u8>,
    pub(crate) peer: SocketAddr,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) received: Instant,
    /// Holds the request's place in `max_in_flight` until it is answered.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Publishes queued records in batches until the queue closes, then finishes the
/// batches in flight.
pub(crate) async fn run<D: RadiusDirectory>(
    shared: Arc<Shared<D>>,
    mut queue: mpsc::Receiver<(OutgoingEvent, PendingRecord)>,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        let mut batch = Vec::new();
        tokio::select! {
            // Ordered completions first: a confirmed batch frees its slot and its replies.
            biased;
            Some((records, result)) = in_flight.next(), if !in_flight.is_empty() => {
                answer(&shared, records, result).await;
                continue;
            }
            n = queue.recv_many(&mut batch, BATCH), if open && in_flight.len() < BATCHES_IN_FLIGHT => {
                if n == 0 {
                    open = false;
                    continue;
                }
            }
        }
        let (events, batch): (Vec<OutgoingEvent>, Vec<PendingRecord>) = batch.into_iter().unzip();
        let log = shared.log.clone();
        let timeout = shared.publish_timeout;
        in_flight.push_back(async move {
            let result = match tokio::time::timeout(timeout, log.publish_batch(&events)).await {
                Ok(result) => result,
                Err(_) => Err(BusError::Unavailable(format!(
                    "no publish ack within {timeout:?}"
                ))),
            };
            (batch, result)
        });
    }
}

/// Answers a confirmed batch, or leaves it unanswered (the NAS retransmits) if the log
/// did not confirm it.
async fn answer<D: RadiusDirectory>(
    shared: &Shared<D>,
    records: Vec<PendingRecord>,
    result: Result<Vec<PublishAck>, BusError>,
) {
    let acks = match result {
        Ok(acks) if acks.len() == records.len() => acks,
        Ok(acks) => {
            tracing::error!(
                records = records.len(),
                acks = acks.len(),
                "The log confirmed a different number of accounting records than were published; none is answered."
            );
            unacknowledged(records.len());
            return;
        }
        Err(error) => {
            tracing::warn!(%error, records = records.len(), "Accounting records were not made durable; the NASes will retransmit them.");
            unacknowledged(records.len());
            return;
        }
    };
    for (pending, ack) in records.into_iter().zip(acks) {
        // With `follow_interval` the follower applies every event in log order, ours
        // included; otherwise apply it now, once.
        if !ack.duplicate && shared.config.follow_interval.is_none() {
            shared.apply(&pending.record);
        }
        if let Err(error) = pending.socket.send_to(&pending.reply, pending.peer).await {
            tracing::debug!(%error, "Sending a RADIUS reply failed.");
        }
        let handles = &shared.metrics;
        if ack.duplicate {
            handles.accounting_duplicate.increment(1);
            handles.accounting_duplicates.increment(1);
        } else {
            handles.accounting_recorded.increment(1);
        }
        handles
            .accounting_duration
            .record(pending.received.elapsed().as_secs_f64());
        drop(pending.permit);
    }
}

fn unacknowledged(n: usize) {
    ::metrics::counter!(metrics::ACCT_UNACKNOWLEDGED_TOTAL).increment(n as u64);
    ::metrics::counter!(metrics::DROPPED_TOTAL, "kind" => "accounting", "reason" => "publish_failed")
        .increment(n as u64);
}
