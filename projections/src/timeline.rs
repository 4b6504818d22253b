//! The devices' raw ActivityWatch timelines: the newest version of every
//! event of every bucket, as the device's watchers wrote it, without the
//! events and buckets deleted on the device (their retractions drop them).
//!
//! Events arrive typed, personal data (the event's data) opened by the
//! reader; when its member was erased it arrives as `None` and is stored as
//! NULL, while the event's bucket and times stay.
//!
//! Each batch is written with at most three statements: the buckets
//! retracted (their rows from before the batch), the events retracted, and
//! one upsert of the newest version of each event the batch touched (a
//! version never replaces a newer one).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};
use trackhrs_domain::timeline::{DeviceTimeline, TimelineEventKind};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::erasure::{self, WithErasures};
use crate::error::{ApplyError, poison_at};
use crate::projection::Projection;

/// Its name in the catalog.
pub const NAME: &str = "timeline";

/// The raw-timeline projection at a catalog version.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    version: u32,
}

impl Timeline {
    /// The projection at catalog `version` (1 on a new database; a rebuild
    /// registers the next).
    pub fn new(version: u32) -> Self {
        Self { version }
    }
}

type Commit = TypedCommit<TimelineEventKind>;

/// One event as the read model keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    /// The bucket.
    pub bucket: String,
    /// The bucket's type.
    pub bucket_type: String,
    /// The watcher that made the bucket.
    pub client: String,
    /// The event's key on the device.
    pub key: String,
    /// Its version.
    pub version: i64,
    /// Start, µs since the epoch.
    pub start_us: i64,
    /// End, µs since the epoch.
    pub end_us: i64,
    /// The data; None when its member was erased.
    pub data: Option<Value>,
}

/// An event's identity: org, device, bucket, key.
type Key = (String, String, String, String);

struct Row {
    person: String,
    row: TimelineRow,
    data: Option<String>,
    position: i64,
}

/// The batch's changes, folded in stream order.
#[derive(Default)]
struct Changes {
    /// The newest state of each event the batch touched; None: retracted.
    events: BTreeMap<Key, Option<Row>>,
    /// Buckets retracted: (org, device, bucket).
    buckets: BTreeSet<(String, String, String)>,
}

impl Changes {
    fn fold(&mut self, commit: &Commit) -> Result<(), ApplyError> {
        let (org, device) = (&commit.org_id, &commit.aggregate_id);
        let mut member: Option<String> = None;
        for event in &commit.events {
            match event {
                TimelineEventKind::TimelineBatchAccepted { member: m, .. } => {
                    member = Some(m.to_string());
                }
                TimelineEventKind::TimelineEventRecorded(e) => {
                    let person = member.clone().ok_or_else(|| {
                        poison_at(
                            commit.stream_sequence,
                            "an event before its TimelineBatchAccepted",
                        )
                    })?;
                    let row = TimelineRow {
                        bucket: e.bucket.clone(),
                        bucket_type: e.bucket_type.clone(),
                        client: e.client.clone(),
                        key: e.key.clone(),
                        version: i64::try_from(e.version).map_err(|_| {
                            poison_at(commit.stream_sequence, "version is out of range")
                        })?,
                        start_us: e.start_us,
                        end_us: e.end_us,
                        data: None,
                    };
                    let data = e.data.value().map(str::to_owned);
                    let key = (
                        org.clone(),
                        device.clone(),
                        row.bucket.clone(),
                        row.key.clone(),
                    );
                    let newer = match self.events.get(&key) {
                        Some(Some(kept)) => kept.row.version <= row.version,
                        Some(None) | None => true,
                    };
                    if newer {
                        self.events.insert(
                            key,
                            Some(Row {
                                person,
                                row,
                                data,
                                position: commit.stream_sequence as i64,
                            }),
                        );
                    }
                }
                TimelineEventKind::TimelineEventRetracted { bucket, key } => {
                    let key = (org.clone(), device.clone(), bucket.clone(), key.clone());
                    self.events.insert(key, None);
                }
                TimelineEventKind::TimelineBucketRetracted { bucket } => {
                    self.events
                        .retain(|(o, d, b, _), _| !(o == org && d == device && b == bucket));
                    self.buckets
                        .insert((org.clone(), device.clone(), bucket.clone()));
                }
            }
        }
        Ok(())
    }
}

impl Projection for Timeline {
    type Commit = WithErasures<Commit>;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Self::Commit, StoreError> {
        erasure::decode(keys, subject, sequence, bytes, async || {
            decode_typed::<DeviceTimeline>(keys, subject, sequence, bytes).await
        })
        .await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![
            EventStore::subjects_of::<DeviceTimeline>(),
            erasure::subjects(),
        ]
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.events (
                 org_id      text NOT NULL,
                 device_id   text NOT NULL,
                 bucket      text NOT NULL,
                 event_key   text NOT NULL,
                 bucket_type text NOT NULL,
                 client      text NOT NULL,
                 person_id   text NOT NULL,
                 version     bigint NOT NULL,
                 start_us    bigint NOT NULL,
                 end_us      bigint NOT NULL,
                 data        jsonb,
                 position    bigint NOT NULL,
                 PRIMARY KEY (org_id, device_id, bucket, event_key)
             );
             CREATE INDEX ON {schema}.events (org_id, device_id, end_us);"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[Self::Commit],
    ) -> Result<(), ApplyError> {
        let mut changes = Changes::default();
        let mut erased = Vec::new();
        for commit in batch {
            match commit {
                WithErasures::Own(commit) => changes.fold(commit)?,
                WithErasures::Erasure(commit) => erased
                    .extend(erasure::erased(commit).map(|person| (commit.org_id.as_str(), person))),
            }
        }
        if !changes.buckets.is_empty() {
            let (mut orgs, mut devices, mut buckets) = (Vec::new(), Vec::new(), Vec::new());
            for (o, d, b) in &changes.buckets {
                orgs.push(o.as_str());
                devices.push(d.as_str());
                buckets.push(b.as_str());
            }
            tx.execute(
                &format!(
                    "DELETE FROM {schema}.events e
                     USING unnest($1::text[], $2::text[], $3::text[]) AS r(o, d, b)
                     WHERE e.org_id = r.o AND e.device_id = r.d AND e.bucket = r.b"
                ),
                &[&orgs, &devices, &buckets],
            )
            .await?;
        }
        let (retracted, kept): (Vec<_>, Vec<_>) =
            changes.events.iter().partition(|(_, row)| row.is_none());
        if !retracted.is_empty() {
            let mut cols: [Vec<&str>; 4] = Default::default();
            for ((o, d, b, k), _) in &retracted {
                for (col, v) in cols.iter_mut().zip([o, d, b, k]) {
                    col.push(v.as_str());
                }
            }
            tx.execute(
                &format!(
                    "DELETE FROM {schema}.events e
                     USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(o, d, b, k)
                     WHERE e.org_id = r.o AND e.device_id = r.d AND e.bucket = r.b
                       AND e.event_key = r.k"
                ),
                &[&cols[0], &cols[1], &cols[2], &cols[3]],
            )
            .await?;
        }
        if !kept.is_empty() {
            let mut texts: [Vec<&str>; 7] = Default::default();
            let mut data: Vec<Option<&str>> = Vec::new();
            let mut numbers: [Vec<i64>; 4] = Default::default();
            for ((o, d, _, _), row) in &kept {
                let Some(r) = row else { continue };
                for (col, v) in texts.iter_mut().zip([
                    o,
                    d,
                    &r.row.bucket,
                    &r.row.key,
                    &r.row.bucket_type,
                    &r.row.client,
                    &r.person,
                ]) {
                    col.push(v.as_str());
                }
                data.push(r.data.as_deref());
                for (col, v) in numbers.iter_mut().zip([
                    r.row.version,
                    r.row.start_us,
                    r.row.end_us,
                    r.position,
                ]) {
                    col.push(v);
                }
            }
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.events AS e (org_id, device_id, bucket, event_key,
                         bucket_type, client, person_id, version, start_us, end_us, data, position)
                     SELECT o, d, b, k, t, c, p, v, s, n, j::jsonb, pos
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::bigint[], $9::bigint[],
                                 $10::bigint[], $11::text[], $12::bigint[])
                          AS r(o, d, b, k, t, c, p, v, s, n, j, pos)
                     ON CONFLICT (org_id, device_id, bucket, event_key) DO UPDATE SET
                         bucket_type = excluded.bucket_type, client = excluded.client,
                         person_id = excluded.person_id, version = excluded.version,
                         start_us = excluded.start_us, end_us = excluded.end_us,
                         data = excluded.data, position = excluded.position
                     WHERE e.version <= excluded.version"
                ),
                &[
                    &texts[0],
                    &texts[1],
                    &texts[2],
                    &texts[3],
                    &texts[4],
                    &texts[5],
                    &texts[6],
                    &numbers[0],
                    &numbers[1],
                    &numbers[2],
                    &data,
                    &numbers[3],
                ],
            )
            .await?;
        }
        // Last, so an erased person's events written by this batch go too.
        for (org, person) in erased {
            tx.execute(
                &format!(
                    "UPDATE {schema}.events SET data = NULL WHERE org_id = $1 AND person_id = $2"
                ),
                &[&org, &person],
            )
            .await?;
        }
        Ok(())
    }
}

/// A device's events overlapping `[from_us, to_us)` (an event without
/// duration: starting in it), by start, from the read model in `schema`:
/// at most `max_events` of them and `max_bytes` (each weighed by its data,
/// names and 64 bytes; PostgreSQL sends no more than that, and one row).
/// Says whether any were left out.
pub async fn device_events(
    pg: &impl GenericClient,
    schema: &str,
    org: &str,
    device: &str,
    (from_us, to_us): (i64, i64),
    (max_events, max_bytes): (i64, i64),
) -> Result<(Vec<TimelineRow>, bool), tokio_postgres::Error> {
    // One more than asked (the newest rows first limited, then weighed),
    // and rows up to the one that crosses the byte budget: whether anything
    // was left out shows in what comes back. A row weighs its data, its
    // names and 64 bytes for the rest of its answer.
    let rows = pg
        .query(
            &format!(
                "SELECT bucket, bucket_type, client, event_key, version, start_us, end_us,
                        data, size
                 FROM (SELECT l.*, (sum(size) OVER (ORDER BY start_us, bucket, event_key))::bigint AS running
                       FROM (SELECT bucket, bucket_type, client, event_key, version, start_us,
                                    end_us, data::text AS data,
                                    (coalesce(octet_length(data::text), 0) + octet_length(bucket)
                                     + octet_length(bucket_type) + octet_length(client)
                                     + octet_length(event_key) + 64)::bigint AS size
                             FROM {schema}.events
                             WHERE org_id = $1 AND device_id = $2 AND end_us >= $3
                               AND start_us < $4 AND (end_us > $3 OR start_us = end_us)
                             ORDER BY start_us, bucket, event_key
                             LIMIT $5) l) w
                 WHERE running - size <= $6
                 ORDER BY start_us, bucket, event_key"
            ),
            &[
                &org,
                &device,
                &from_us,
                &to_us,
                &max_events.saturating_add(1),
                &max_bytes,
            ],
        )
        .await?;
    let mut bytes = 0i64;
    let mut events = Vec::with_capacity(rows.len());
    let mut truncated = false;
    for r in &rows {
        bytes = bytes.saturating_add(r.get::<_, i64>(8));
        if bytes > max_bytes || events.len() as i64 == max_events {
            truncated = true;
            break;
        }
        events.push(TimelineRow {
            bucket: r.get(0),
            bucket_type: r.get(1),
            client: r.get(2),
            key: r.get(3),
            version: r.get(4),
            start_us: r.get(5),
            end_us: r.get(6),
            data: r
                .get::<_, Option<String>>(7)
                .and_then(|d| serde_json::from_str(&d).ok()),
        });
    }
    Ok((events, truncated))
}
