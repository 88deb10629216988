//! The query log: `dns.query` events published off the answer path.

use std::{sync::Arc, time::Duration};

use pampa_bus::{EventLog, OutgoingEvent};
use pampa_schemas::{new_id, DnsQuery, Envelope};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::metrics;

/// The `source` of the events.
pub const SOURCE: &str = "dns";
/// Publishes in flight at once: enough for the embedded log to group many events into
/// one fsync at tens of thousands of queries a second.
const CONCURRENCY: usize = 512;
/// Events taken off the queue per wake-up.
const BATCH: usize = 1024;

/// Queues one event without waiting; a full queue drops it and counts it.
pub(crate) fn enqueue(tx: &mpsc::Sender<DnsQuery>, event: DnsQuery) {
    if let Err(e) = tx.try_send(event) {
        let reason = match e {
            mpsc::error::TrySendError::Full(_) => "queue_full",
            mpsc::error::TrySendError::Closed(_) => "publish_failed",
        };
        ::metrics::counter!(metrics::QUERY_LOG_DROPPED_TOTAL, "reason" => reason).increment(1);
    }
}

/// Drains the queue into the log, many publishes at once, until `stop` turns true; then
/// publishes what is still queued and waits for the publishes in flight.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<DnsQuery>,
    log: EventLog,
    publish_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = stop.changed() => { rx.close(); rx.recv_many(&mut batch, BATCH).await }
        };
        if n == 0 {
            break;
        }
        for event in batch.drain(..) {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let time = event.time;
                let mut envelope = Envelope::root(new_id(), SOURCE, event);
                envelope.occurred_at = time;
                let published = match OutgoingEvent::from_envelope(&envelope) {
                    Ok(out) => matches!(
                        tokio::time::timeout(publish_timeout, log.publish(&out)).await,
                        Ok(Ok(_))
                    ),
                    Err(_) => false,
                };
                if !published {
                    ::metrics::counter!(metrics::QUERY_LOG_DROPPED_TOTAL, "reason" => "publish_failed")
                        .increment(1);
                }
                drop(permit);
            });
        }
    }
    let _ = permits.acquire_many(CONCURRENCY as u32).await;
}
