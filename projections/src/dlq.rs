//! Dead letters: messages a projection version could not decode or apply go
//! to the JetStream stream `TRACKHRS_DLQ` (subject `dlq.<name>.<version>`)
//! with the original bytes as payload and where they came from and why in
//! headers. The runner moves on; [`replay_dead_letters`] applies them later
//! (after a fix) and removes each one it applied.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tokio_postgres::Client;
use trackhrs_nats::{EventStore, StoreError};

use crate::catalog::{CATALOG_SCHEMA, VersionState, already_deleted, select_version, to_i64};
use crate::error::{ApplyError, ProjectionError, describe};
use crate::invalidation;
use crate::projection::{Committed, Projection, validate};

/// Name of the dead-letter stream.
pub const DLQ_STREAM: &str = "TRACKHRS_DLQ";
/// Header: projection name.
pub const HEADER_PROJECTION: &str = "Trackhrs-Projection";
/// Header: projection version.
pub const HEADER_VERSION: &str = "Trackhrs-Projection-Version";
/// Header: subject of the original message on the events stream.
pub const HEADER_SUBJECT: &str = "Trackhrs-Subject";
/// Header: stream sequence of the original message.
pub const HEADER_SEQUENCE: &str = "Trackhrs-Stream-Sequence";
/// Header: why it could not be decoded or applied.
pub const HEADER_REASON: &str = "Trackhrs-Reason";
/// Longest reason kept, in bytes.
const MAX_REASON: usize = 1024;

/// Subject of a version's dead letters: `dlq.<name>.<version>`.
pub fn subject(name: &str, version: u32) -> String {
    format!("dlq.{name}.{version}")
}

/// The dead-letter stream. Unlike the event log, dead letters can be deleted
/// (replay removes them).
fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.into(),
        description: Some(
            "TrackHrs projection dead letters: messages a projection could not decode or apply"
                .into(),
        ),
        subjects: vec!["dlq.>".into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: replicas,
        // A runner that crashed after dead-lettering but before its commit
        // dead-letters the message again on restart; the id dedups it.
        duplicate_window: std::time::Duration::from_secs(3600),
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates or updates the dead-letter stream (`trackhrs provision`).
/// Idempotent; safe from several processes at once.
pub async fn provision(
    client: &async_nats::Client,
    replicas: usize,
) -> Result<(), ProjectionError> {
    jetstream::new(client.clone())
        .create_or_update_stream(stream_config(replicas))
        .await
        .map_err(|e| ProjectionError::Nats(format!("stream {DLQ_STREAM}: {e}")))?;
    Ok(())
}

/// Creates the dead-letter stream when it does not exist (a server nobody
/// provisioned: tests, `trackhrs dev`); changes nothing when it does, so a
/// runtime identity that may not create or update streams gets through.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(), ProjectionError> {
    // Asks for the stream's info and creates it only when there is none.
    js.get_or_create_stream(stream_config(replicas))
        .await
        .map_err(|e| {
            ProjectionError::Nats(format!(
                "stream {DLQ_STREAM}: {e} (where it does not exist and cannot be created: run `trackhrs provision`)"
            ))
        })?;
    Ok(())
}

/// A message on its way to the dead-letter stream.
#[derive(Debug, Clone)]
pub(crate) struct Poisoned {
    pub subject: String,
    pub stream_sequence: u64,
    pub reason: String,
    pub payload: Bytes,
}

/// Keeps a reason fit for a header: one line, at most [`MAX_REASON`] bytes.
fn header_safe(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Stores one dead letter and waits for JetStream's acknowledgement.
pub(crate) async fn publish(
    js: &jetstream::Context,
    name: &str,
    version: u32,
    p: &Poisoned,
) -> Result<(), ProjectionError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("{name}.{version}.{}", p.stream_sequence).as_str(),
    );
    headers.insert(HEADER_PROJECTION, name);
    headers.insert(HEADER_VERSION, version.to_string().as_str());
    headers.insert(HEADER_SUBJECT, p.subject.as_str());
    headers.insert(HEADER_SEQUENCE, p.stream_sequence.to_string().as_str());
    headers.insert(HEADER_REASON, header_safe(&p.reason).as_str());
    js.publish_with_headers(subject(name, version), headers, p.payload.clone())
        .await
        .map_err(ProjectionError::nats)?
        .await
        .map_err(ProjectionError::nats)?;
    tracing::warn!(
        projection = name,
        version,
        subject = %p.subject,
        stream_sequence = p.stream_sequence,
        reason = %p.reason,
        "dead-lettered a message"
    );
    Ok(())
}

/// One stored dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream (what replay removes).
    pub dlq_sequence: u64,
    /// Projection name.
    pub projection: String,
    /// Projection version that failed.
    pub version: u32,
    /// Subject of the original message.
    pub subject: String,
    /// Stream sequence of the original message on the events stream.
    pub stream_sequence: u64,
    /// Why it failed.
    pub reason: String,
    /// The original message's bytes, unchanged.
    pub payload: Bytes,
}

fn header(headers: &HeaderMap, key: &str) -> String {
    headers
        .get(key)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

fn from_stream_message(
    msg: jetstream::message::StreamMessage,
) -> Result<DeadLetter, ProjectionError> {
    let h = &msg.headers;
    let bad =
        |what: &str| ProjectionError::Catalog(format!("dead letter {}: bad {what}", msg.sequence));
    Ok(DeadLetter {
        dlq_sequence: msg.sequence,
        projection: header(h, HEADER_PROJECTION),
        version: header(h, HEADER_VERSION)
            .parse()
            .map_err(|_| bad("version"))?,
        subject: header(h, HEADER_SUBJECT),
        stream_sequence: header(h, HEADER_SEQUENCE)
            .parse()
            .map_err(|_| bad("stream sequence"))?,
        reason: header(h, HEADER_REASON),
        payload: msg.payload.clone(),
    })
}

/// Lists dead letters in the order they were stored: all of them, or those
/// of one projection (every version). An absent stream means none.
pub async fn list_dead_letters(
    store: &EventStore,
    projection: Option<&str>,
) -> Result<Vec<DeadLetter>, ProjectionError> {
    let js = jetstream::new(store.client().clone());
    let filter = match projection {
        Some(name) => format!("dlq.{name}.>"),
        None => "dlq.>".to_owned(),
    };
    let dlq = match js.get_stream(DLQ_STREAM).await {
        Ok(s) => s,
        Err(e) => {
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref je)
                if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
            {
                return Ok(Vec::new());
            }
            return Err(ProjectionError::nats(e));
        }
    };
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        match dlq
            .direct_get_next_for_subject(filter.as_str(), Some(next))
            .await
        {
            Ok(msg) => {
                next = msg.sequence + 1;
                out.push(from_stream_message(msg)?);
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ProjectionError::nats(e)),
        }
    }
}

/// Deletes every dead letter of a version (when the version is dropped).
pub(crate) async fn purge(
    js: &jetstream::Context,
    name: &str,
    version: u32,
) -> Result<(), ProjectionError> {
    match js.get_stream(DLQ_STREAM).await {
        Ok(dlq) => {
            dlq.purge()
                .filter(subject(name, version))
                .await
                .map_err(ProjectionError::nats)?;
            Ok(())
        }
        Err(e) => {
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref je)
                if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
            {
                Ok(())
            } else {
                Err(ProjectionError::nats(e))
            }
        }
    }
}

/// What [`replay_dead_letters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters applied now and removed.
    pub replayed: usize,
    /// Dead letters applied by an earlier replay (which stopped before
    /// removing them); removed without applying again.
    pub already_applied: usize,
    /// Dead letters that still fail, with the reason; they stay.
    pub still_failing: Vec<(u64, String)>,
}

/// Replays the dead letters of `projection`'s name and version through it:
/// decodes each stored original again, applies it in its own transaction
/// (which also records it as replayed, so a crash before the removal never
/// applies it twice, and updates the counters), then removes it from the
/// dead-letter stream. One that still fails stays, with the new reason in
/// the report. Transient failures (PostgreSQL or NATS down) stop the replay
/// with an error; running it again is safe.
pub async fn replay_dead_letters<P: Projection>(
    pg: &mut Client,
    store: &EventStore,
    projection: &P,
) -> Result<ReplayReport, ProjectionError> {
    validate(projection)?;
    let (name, version) = (projection.name(), projection.version());
    let js = jetstream::new(store.client().clone());
    let letters = list_dead_letters(store, Some(name)).await?;
    let mut report = ReplayReport::default();
    for letter in letters.into_iter().filter(|l| l.version == version) {
        let commit = match P::decode(
            store.keys(),
            &letter.subject,
            letter.stream_sequence,
            &letter.payload,
        )
        .await
        {
            Ok(c) => c,
            Err(StoreError::Decode { reason, .. }) => {
                report.still_failing.push((letter.dlq_sequence, reason));
                continue;
            }
            Err(e) => return Err(ProjectionError::nats(e)),
        };
        let tx = pg.transaction().await?;
        let info = select_version(&tx, name, version, true)
            .await?
            .ok_or_else(|| ProjectionError::UnknownVersion {
                name: name.to_owned(),
                version,
            })?;
        let fresh = tx
            .execute(
                &format!(
                    "INSERT INTO {CATALOG_SCHEMA}.replayed_dead_letters (name, version, stream_sequence)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
                ),
                &[&name, &i64::from(version), &to_i64(letter.stream_sequence)],
            )
            .await?
            == 1;
        if fresh {
            match projection
                .apply(&tx, &info.schema, std::slice::from_ref(&commit))
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    return Err(match e {
                        ApplyError::Postgres(pg) => ProjectionError::Postgres(pg),
                        other => ProjectionError::Apply(describe(&other)),
                    });
                }
                Err(e) => {
                    drop(tx);
                    report
                        .still_failing
                        .push((letter.dlq_sequence, describe(&e)));
                    continue;
                }
            }
            tx.execute(
                &format!(
                    "UPDATE {CATALOG_SCHEMA}.projection_versions
                     SET commits_applied = commits_applied + 1,
                         events_applied = events_applied + $3,
                         dead_letters = greatest(dead_letters - 1, 0),
                         updated_at = now()
                     WHERE name = $1 AND version = $2"
                ),
                &[&name, &i64::from(version), &to_i64(commit.events() as u64)],
            )
            .await?;
        }
        tx.commit().await?;
        if fresh {
            report.replayed += 1;
            if info.state == VersionState::Live {
                let orgs = std::iter::once(commit.org_id().to_owned()).collect();
                invalidation::publish_orgs(store.client(), name, &orgs, info.position).await;
            }
        } else {
            report.already_applied += 1;
        }
        let dlq = js
            .get_stream_no_info(DLQ_STREAM)
            .await
            .map_err(ProjectionError::nats)?;
        if let Err(e) = dlq.delete_message(letter.dlq_sequence).await
            && !already_deleted(&e.kind())
        {
            return Err(ProjectionError::nats(e));
        }
        tracing::info!(
            projection = name,
            version,
            stream_sequence = letter.stream_sequence,
            "replayed dead letter"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_a_header() {
        assert_eq!(header_safe("a\r\nb"), "a  b");
        let long = "é".repeat(MAX_REASON);
        let cut = header_safe(&long);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
    }
}
