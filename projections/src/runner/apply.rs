//! The applying side of a session: decodes a batch into the projection's
//! commits and writes them with the checkpoint in one transaction, taking
//! poison commits out to the dead letters.

use std::collections::HashMap;

use bytes::Bytes;
use tokio_postgres::Client;
use trackhrs_nats::{EventStore, StoreError};

use super::fetch::Delivery;
use super::{Ctx, Halt, check_state};
use crate::catalog::{VersionState, advance, select_version};
use crate::dlq::{self, Poisoned};
use crate::error::{ApplyError, ProjectionError, describe};
use crate::projection::{Committed, Projection};

/// A batch decoded and split.
pub(super) struct Prepared<C> {
    pub(super) commits: Vec<C>,
    pub(super) poison: Vec<Poisoned>,
    /// Subject and original bytes of every message to apply, by stream
    /// sequence, for dead-lettering a commit the projection refuses.
    pub(super) originals: HashMap<u64, (String, Bytes)>,
}

pub(super) enum Attempt {
    Committed {
        live: bool,
    },
    /// A poison commit was taken out; apply the rest at once.
    Again,
    /// A deterministic error without a named commit: apply one by one.
    Isolate(String),
}

/// Decodes the deliveries to apply, on as many tasks as there are cores
/// (decoding and unsealing is most of a batch's CPU), keeping stream order.
/// An undecodable message is poison; a failure to reach the key store is an
/// error (retried).
pub(super) async fn prepare<P: Projection>(
    store: &EventStore,
    deliveries: &[Delivery],
) -> Result<Prepared<P::Commit>, StoreError> {
    let todo: Vec<(String, u64, Bytes)> = deliveries
        .iter()
        .filter(|d| !d.skip)
        .map(|d| (d.msg.subject.to_string(), d.sequence, d.msg.payload.clone()))
        .collect();
    let tasks = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len().max(1));
    let chunk = todo.len().div_ceil(tasks).max(1);
    let mut handles = Vec::with_capacity(tasks);
    for part in todo.chunks(chunk) {
        let keys = store.keys().clone();
        let part = part.to_vec();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(part.len());
            for (subject, sequence, payload) in part {
                let decoded = P::decode(&keys, &subject, sequence, &payload).await;
                out.push((subject, sequence, payload, decoded));
            }
            out
        }));
    }
    let mut prepared = Prepared {
        commits: Vec::with_capacity(todo.len()),
        poison: Vec::new(),
        originals: HashMap::with_capacity(todo.len()),
    };
    for handle in handles {
        let decoded = handle
            .await
            .map_err(|e| StoreError::Unavailable(format!("decoding task: {e}")))?;
        for (subject, sequence, payload, result) in decoded {
            match result {
                Ok(commit) => prepared.commits.push(commit),
                Err(StoreError::Decode { reason, .. }) => prepared.poison.push(Poisoned {
                    subject: subject.clone(),
                    stream_sequence: sequence,
                    reason: format!("cannot decode: {reason}"),
                    payload: payload.clone(),
                }),
                Err(e) => return Err(e),
            }
            prepared.originals.insert(sequence, (subject, payload));
        }
    }
    Ok(prepared)
}

/// One try at committing a batch.
pub(super) async fn attempt<P: Projection>(
    ctx: &Ctx<'_, P>,
    client: &mut Client,
    prepared: &mut Prepared<P::Commit>,
    position: u64,
    target: u64,
    isolate: bool,
) -> Result<Attempt, Halt> {
    let mut tx = client.transaction().await?;
    let info = select_version(&tx, ctx.name, ctx.version, true)
        .await?
        .ok_or(Halt::Dropped)?;
    check_state(&info)?;
    if info.position != position {
        return Err(Halt::Reset(format!(
            "the checkpoint is {} where this session expected {position}",
            info.position
        )));
    }
    if !prepared.commits.is_empty() {
        if isolate {
            let mut failed = Vec::new();
            for (i, commit) in prepared.commits.iter().enumerate() {
                let savepoint = tx.savepoint("trackhrs_commit").await?;
                match ctx
                    .projection
                    .apply(&savepoint, &ctx.schema, std::slice::from_ref(commit))
                    .await
                {
                    Ok(()) => savepoint.commit().await?,
                    Err(e) if e.is_transient() => return Err(apply_failure(e)),
                    Err(e) => {
                        savepoint.rollback().await?;
                        failed.push((i, reason_of(e)));
                    }
                }
            }
            for (i, reason) in failed.into_iter().rev() {
                take_poison(prepared, i, reason);
            }
        } else {
            match ctx
                .projection
                .apply(&tx, &ctx.schema, &prepared.commits)
                .await
            {
                Ok(()) => {}
                Err(ApplyError::Poison {
                    stream_sequence,
                    reason,
                }) => {
                    return Ok(
                        match prepared
                            .commits
                            .iter()
                            .position(|c| c.stream_sequence() == stream_sequence)
                        {
                            Some(i) => {
                                take_poison(prepared, i, reason);
                                Attempt::Again
                            }
                            None => Attempt::Isolate(format!(
                                "poison reported for stream sequence {stream_sequence}, which is not in the batch: {reason}"
                            )),
                        },
                    );
                }
                Err(e) if e.is_transient() => return Err(apply_failure(e)),
                Err(e) => return Ok(Attempt::Isolate(describe(&e))),
            }
        }
    }
    for p in &prepared.poison {
        dlq::publish(&ctx.js, ctx.name, ctx.version, p).await?;
    }
    let events: usize = prepared.commits.iter().map(|c| c.events()).sum();
    advance(
        &tx,
        ctx.name,
        ctx.version,
        target,
        prepared.commits.len() as u64,
        events as u64,
        prepared.poison.len() as u64,
    )
    .await?;
    tx.commit().await?;
    Ok(Attempt::Committed {
        live: info.state == VersionState::Live,
    })
}

pub(super) fn reason_of(e: ApplyError) -> String {
    match e {
        ApplyError::Poison { reason, .. } => reason,
        other => describe(&other),
    }
}

pub(super) fn apply_failure(e: ApplyError) -> Halt {
    Halt::Failed(match e {
        ApplyError::Postgres(pg) => ProjectionError::Postgres(pg),
        other => ProjectionError::Apply(describe(&other)),
    })
}

/// Moves commit `i` from the batch to the dead letters, with the original
/// bytes of its message.
pub(super) fn take_poison<C: Committed>(prepared: &mut Prepared<C>, i: usize, reason: String) {
    let commit = prepared.commits.remove(i);
    let sequence = commit.stream_sequence();
    let (subject, payload) = prepared.originals.remove(&sequence).unwrap_or_default();
    prepared.poison.push(Poisoned {
        subject,
        stream_sequence: sequence,
        reason,
        payload,
    });
}
