//! Group commit: appends for different aggregates that are waiting at the
//! same moment go to JetStream as one atomic batch (ADR-50), so the server
//! stores, and with `sync_interval: always` flushes, them together.
//!
//! Batches form only from appends already queued: a lone append is published
//! at once, so light load pays no latency. If a batch is refused (one of its
//! appends conflicts, or carries a repeated command id), nothing of it is
//! stored, and each append is published on its own to get its own answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, publish::PublishAck};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Batches being committed at once. The server stores a stream's batches
/// one after the other, so more in flight only makes each batch smaller:
/// measured with fsync on every write (`benches/results.md`, 2026-11-29),
/// 4 gave 10.2k appends/s (p99 177 ms) with 1,000 appenders where 32 gave
/// 9.2k (p99 243 ms), and 6.0k/s (p99 36 ms) with 100 appenders where 32
/// gave 2.9k (p99 101 ms); 2 was no better than 4.
const BATCHES_IN_FLIGHT: usize = 4;
/// Largest batch: below async-nats's default of 5,000 acknowledgements in
/// flight with [`BATCHES_IN_FLIGHT`], and below the server's default limit
/// of 1,000 messages per atomic batch.
pub const MAX_BATCH: usize = 100;

/// Commits of this many bytes or more are published on their own, not
/// grouped: they already carry many events per message (an agent's batch of
/// 500 spans is about 117 KB), so a shared flush saves them little, while
/// holding them in an atomic batch makes the server stage megabytes before
/// it stores any and lets only [`BATCHES_IN_FLIGHT`] of them move at once.
/// Measured with fsync on every write (`benches/results.md`, 2026-11-29,
/// `bench pipeline`): ingest of such commits was faster without group
/// commit at both 32 and 64 uploads at once.
pub const MAX_GROUPED_BYTES: usize = 64 * 1024;

/// One append waiting to be published.
pub(crate) struct Pending {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub reply: oneshot::Sender<Result<PublishAck, PublishError>>,
}

/// Counters of the group committer, for tests and metrics.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Batches stored whole.
    pub batches: AtomicU64,
    /// Appends stored as part of a batch.
    pub batched_appends: AtomicU64,
    /// Batches refused or unacknowledged, whose appends went one by one.
    pub fallbacks: AtomicU64,
}

/// Starts the committer; appends are sent to the returned channel.
pub(crate) fn start(
    client: Client,
    js: jetstream::Context,
    max_batch: usize,
    send_timeout: Duration,
    stats: Arc<GroupCommitStats>,
) -> mpsc::Sender<Pending> {
    let max_batch = max_batch.clamp(1, MAX_BATCH);
    let (tx, rx) = mpsc::channel(max_batch * BATCHES_IN_FLIGHT);
    tokio::spawn(run(client, js, rx, max_batch, send_timeout, stats));
    tx
}

async fn run(
    client: Client,
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    send_timeout: Duration,
    stats: Arc<GroupCommitStats>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if batch.len() == 1 {
            let p = batch.pop().expect("one pending append");
            publish_alone(&js, p, Some(permit)).await;
            continue;
        }
        // Sending only enqueues on the client; during a reconnect its queue can
        // fill, and the committer must not wait on it without limit.
        let sent = tokio::time::timeout(send_timeout, send_batch(&client, &js, &batch))
            .await
            .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut)));
        match sent {
            Ok(ack) => {
                let (js, stats) = (js.clone(), stats.clone());
                tokio::spawn(async move {
                    settle(&js, batch, ack.await, &stats).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // The batch never reached its commit: the server drops it.
                tracing::warn!(error = %e, "batch not sent; publishing one by one");
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                let js = js.clone();
                tokio::spawn(async move {
                    one_by_one(&js, batch).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Publishes the batch: every message but the last without a reply, the last
/// with the commit header, whose acknowledgement covers the whole batch.
async fn send_batch(
    client: &Client,
    js: &jetstream::Context,
    batch: &[Pending],
) -> Result<PublishAckFuture, PublishError> {
    let id = nuid::next().to_string();
    let last = batch.len() - 1;
    for (i, p) in batch.iter().enumerate() {
        let mut headers = p.headers.clone();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i < last {
            client
                .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
                .await
                .map_err(|e| PublishError::with_source(PublishErrorKind::Other, e))?;
        } else {
            headers.insert("Nats-Batch-Commit", "1");
            return js
                .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
                .await;
        }
    }
    unreachable!("a batch has at least two appends")
}

/// Answers every append of a batch from the batch's acknowledgement.
async fn settle(
    js: &jetstream::Context,
    batch: Vec<Pending>,
    ack: Result<PublishAck, PublishError>,
    stats: &GroupCommitStats,
) {
    match ack {
        Ok(ack) if ack.batch_size == Some(batch.len() as u64) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .batched_appends
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            // An atomic batch is stored contiguously, ending at the acknowledged sequence.
            let Some(first) = (ack.sequence + 1).checked_sub(batch.len() as u64) else {
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                one_by_one(js, batch).await;
                return;
            };
            for (i, p) in batch.into_iter().enumerate() {
                let mut own = ack.clone();
                own.sequence = first + i as u64;
                own.batch_id = None;
                own.batch_size = None;
                let _ = p.reply.send(Ok(own));
            }
        }
        Ok(ack) => {
            // Not what an atomic batch answers; never guess sequences.
            tracing::warn!(
                ?ack,
                "unexpected batch acknowledgement; publishing one by one"
            );
            one_by_one(js, batch).await;
        }
        Err(e) => {
            // A conflict inside the batch is routine; anything else (batching
            // disabled on the stream, a server limit) deserves attention.
            if e.kind() == PublishErrorKind::WrongLastSequence {
                tracing::debug!(error = %e, size = batch.len(), "batch refused; publishing one by one");
            } else {
                tracing::warn!(error = %e, size = batch.len(), "batch refused; publishing one by one");
            }
            stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            one_by_one(js, batch).await;
        }
    }
}

/// Publishes each append on its own. Safe after a refused or unacknowledged
/// batch: command ids and expected sequences make a repeat harmless.
async fn one_by_one(js: &jetstream::Context, batch: Vec<Pending>) {
    for p in batch {
        publish_alone(js, p, None).await;
    }
}

/// Publishes one append and answers it when its acknowledgement comes. The
/// acknowledgement is awaited on its own task at once: holding unawaited acks
/// would hold async-nats's in-flight permits, and awaiting them in turn would
/// add their timeouts up. `permit` is released with the answer.
async fn publish_alone(js: &jetstream::Context, p: Pending, permit: Option<OwnedSemaphorePermit>) {
    match js
        .publish_with_headers(p.subject, p.headers, p.payload)
        .await
    {
        Ok(ack) => {
            tokio::spawn(async move {
                let _ = p.reply.send(ack.await);
                drop(permit);
            });
        }
        Err(e) => {
            let _ = p.reply.send(Err(e));
        }
    }
}
