//! The fetching side of a session: pulls batches from the version's
//! consumer, checks that deliveries arrive in order, decodes them ahead of
//! the applying loop and tells when everything of the projection's subjects
//! is in hand.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use trackhrs_nats::EventStore;

use super::apply::{Prepared, prepare};
use super::{Ctx, MIN_BACKOFF, RunnerConfig};
use crate::error::ProjectionError;
use crate::projection::Projection;

/// One delivered message of a batch.
pub(super) struct Delivery {
    pub(super) msg: Message,
    pub(super) sequence: u64,
    /// At or below the checkpoint: acknowledge, do not apply.
    pub(super) skip: bool,
}

/// A fetched batch.
pub(super) struct Fetched {
    pub(super) deliveries: Vec<Delivery>,
    /// `pending` of the last delivery (messages left for the consumer).
    pub(super) last_pending: Option<u64>,
    /// Why the session must start over after this batch, if it must.
    pub(super) anomaly: Option<String>,
}

/// A batch fetched and decoded ahead of the applying loop.
pub(super) struct Ready<C> {
    pub(super) fetched: Fetched,
    pub(super) prepared: Prepared<C>,
    /// From [`probe`], when nothing was pending after this batch.
    pub(super) caught_up: Option<u64>,
}

/// Fetches and decodes the session's batches in order and hands them over
/// (the channel holds one more). Ends after a batch with an anomaly, on a
/// fetch error (sent on), or when the session drops the receiver. Decoding
/// that fails for want of the key store is retried with backoff.
pub(super) async fn read_ahead<P: Projection>(
    store: EventStore,
    consumer: PullConsumer,
    mut events: jetstream::stream::Stream,
    consumer_name: String,
    config: RunnerConfig,
    committed: tokio::sync::watch::Receiver<u64>,
    ready: tokio::sync::mpsc::Sender<Result<Ready<P::Commit>, ProjectionError>>,
) {
    // Consumer sequence of the next delivery (the consumer is new).
    let mut next_delivery = 1;
    let mut last_sequence = *committed.borrow();
    let mut backlog = true;
    loop {
        // The session's checkpoint: a redelivery at or below it is skipped.
        let position = *committed.borrow();
        let fetched = match fetch(
            &consumer,
            &config,
            backlog,
            position,
            &mut next_delivery,
            &mut last_sequence,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                let _ = ready.send(Err(e)).await;
                return;
            }
        };
        backlog = fetched.deliveries.len() >= config.batch_max;
        let caught_up = if fetched.anomaly.is_none() && fetched.last_pending.unwrap_or(0) == 0 {
            probe(&mut events, &consumer_name, next_delivery - 1).await
        } else {
            None
        };
        let mut backoff = MIN_BACKOFF;
        let prepared = loop {
            match prepare::<P>(&store, &fetched.deliveries).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(projection = %consumer_name, error = %e, "cannot decode the batch; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        };
        let last = fetched.anomaly.is_some();
        let batch = Ready {
            fetched,
            prepared,
            caught_up,
        };
        if ready.send(Ok(batch)).await.is_err() || last {
            return;
        }
    }
}

/// Pulls up to `batch_max` messages. While catching up (`backlog`: the
/// previous batch was full, or the session just started) it takes only what
/// the stream holds now, so the last partial batch of a backlog is applied
/// at once; otherwise it waits at most `batch_wait` for a batch to fill.
pub(super) async fn fetch(
    consumer: &PullConsumer,
    config: &RunnerConfig,
    backlog: bool,
    position: u64,
    next_delivery: &mut u64,
    last_sequence: &mut u64,
) -> Result<Fetched, ProjectionError> {
    // Either way the request expires: a lost reply (a reconnect, a server
    // restart) ends the batch instead of waiting for it forever.
    let batch = if backlog {
        consumer
            .fetch()
            .max_messages(config.batch_max)
            .expires(config.batch_wait)
            .messages()
            .await
    } else {
        consumer
            .batch()
            .max_messages(config.batch_max)
            .expires(config.batch_wait)
            .messages()
            .await
    };
    let mut batch = batch.map_err(ProjectionError::nats)?;
    let mut fetched = Fetched {
        deliveries: Vec::new(),
        last_pending: None,
        anomaly: None,
    };
    while let Some(item) = batch.next().await {
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                fetched.anomaly = Some(format!("pull failed: {e}"));
                break;
            }
        };
        let (sequence, delivery, delivered, pending) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                i.consumer_sequence,
                i.delivered,
                i.pending,
            ),
            Err(e) => {
                fetched.anomaly = Some(format!("message without JetStream metadata: {e}"));
                break;
            }
        };
        if delivery != *next_delivery {
            fetched.anomaly = Some(format!(
                "delivery {delivery} arrived where {} was expected (a delivery was missed or the consumer was reset)",
                *next_delivery
            ));
            break;
        }
        *next_delivery += 1;
        if sequence <= position {
            fetched.deliveries.push(Delivery {
                msg,
                sequence,
                skip: true,
            });
        } else if sequence <= *last_sequence || delivered > 1 {
            fetched.anomaly = Some(format!(
                "stream sequence {sequence} (delivery attempt {delivered}) arrived after {}",
                *last_sequence
            ));
            break;
        } else {
            *last_sequence = sequence;
            fetched.deliveries.push(Delivery {
                msg,
                sequence,
                skip: false,
            });
        }
        fetched.last_pending = Some(pending);
    }
    Ok(fetched)
}

/// Deletes the version's consumer if it exists and creates it at
/// `position + 1`, so nothing is outstanding on it.
pub(super) async fn recreate_consumer<P: Projection>(
    ctx: &Ctx<'_, P>,
    events: &jetstream::stream::Stream,
    position: u64,
) -> Result<PullConsumer, ProjectionError> {
    if let Err(e) = events.delete_consumer(&ctx.consumer).await {
        let missing = matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref je)
            if je.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND);
        if !missing {
            return Err(ProjectionError::nats(e));
        }
    }
    let mut subjects = ctx.projection.subjects();
    let (filter_subject, filter_subjects) = if subjects.len() == 1 {
        (subjects.remove(0), Vec::new())
    } else {
        (String::new(), subjects)
    };
    let batch_max = i64::try_from(ctx.config.batch_max).unwrap_or(i64::MAX);
    events
        .create_consumer(pull::Config {
            durable_name: Some(ctx.consumer.clone()),
            description: Some(format!("projection {} version {}", ctx.name, ctx.version)),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: ctx.config.ack_wait,
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            max_ack_pending: batch_max.saturating_mul(4).max(1000),
            ..Default::default()
        })
        .await
        .map_err(ProjectionError::nats)
}

/// Acknowledges every delivery of a committed batch. A lost acknowledgement
/// only means a redelivery, which the checkpoint skips.
pub(super) async fn acknowledge(deliveries: &[Delivery]) {
    for d in deliveries {
        if let Err(e) = d.msg.ack().await {
            tracing::debug!(error = %e, "acknowledgement not sent; the redelivery will be skipped");
            return;
        }
    }
}

/// When the consumer has nothing pending and delivered nothing unseen, the
/// stream's last sequence read before that check: every message of the
/// projection's subjects up to it has been delivered to this session.
pub(super) async fn probe(
    events: &mut jetstream::stream::Stream,
    consumer: &str,
    last_delivery: u64,
) -> Option<u64> {
    let last = events.info().await.ok()?.state.last_sequence;
    let info = events.consumer_info(consumer).await.ok()?;
    (info.num_pending == 0 && info.delivered.consumer_sequence == last_delivery).then_some(last)
}
