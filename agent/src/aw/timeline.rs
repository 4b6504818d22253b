//! The platform's copy of the raw timelines: every change of the local
//! store (an event new or changed, an event or bucket deleted) is queued in
//! order in the same SQLite transaction that marks it queued, and the queue
//! is uploaded in batches numbered in their own per-device sequence. Like
//! the outbox, a batch once formed is sent again as it is until the gateway
//! acknowledges it, and its changes leave the queue only then, so a crash at
//! any point neither loses a change nor records one twice.
//!
//! Events still growing (changed within the settle time, e.g. by
//! heartbeats) wait; the agent's own capture buckets are not synced raw
//! (their content is uploaded as spans). Each event has a key unique to the
//! device (`<store id>-<event id>`) and a version bumped by each change.

use prost::Message;
use rusqlite::{OptionalExtension, Transaction, params};
use trackhrs_schemas::agent::v1::timeline_change::Change;
use trackhrs_schemas::agent::v1::{TimelineChange, TimelineEvent, TimelineRetraction};

use super::store::{AwError, AwStore, OWN_CLIENT, wall_now_us};

/// A batch of changes ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineBatch {
    /// Stable id: the same on every attempt.
    pub batch_id: String,
    /// Per-device sequence number of timeline batches.
    pub seq: u64,
    /// The changes, in order.
    pub changes: Vec<TimelineChange>,
}

/// What became of a batch the gateway refused for good.
#[derive(Debug, Clone, PartialEq)]
pub enum TimelineRefused {
    /// Several changes: they are sent again one per batch, so one bad
    /// change does not take good ones with it.
    Split {
        /// How many.
        changes: usize,
    },
    /// One change: kept in `set_aside` with the reason, never sent again.
    SetAside {
        /// The change.
        change: TimelineChange,
    },
}

/// Most bytes of changes in one batch: the gateway takes batches of up to
/// 256 KiB.
pub const MAX_BATCH_BYTES: i64 = 192 * 1024;

fn key(store_id: &str, event: i64) -> String {
    format!("{store_id}-{event}")
}

fn store_id(tx: &Transaction<'_>) -> Result<String, AwError> {
    Ok(tx.query_row("SELECT store_id FROM sync", [], |r| r.get(0))?)
}

fn enqueue(tx: &Transaction<'_>, change: &TimelineChange) -> Result<(), AwError> {
    tx.prepare_cached("INSERT INTO queue (change) VALUES (?1)")?
        .execute(params![change.encode_to_vec()])?;
    Ok(())
}

/// Queues the retraction of event `event` of `bucket` (None: of the whole
/// bucket), inside the deleting transaction.
pub(super) fn queue_retraction(
    tx: &Transaction<'_>,
    bucket: &str,
    event: Option<i64>,
) -> Result<(), AwError> {
    let event_key = match event {
        Some(id) => key(&store_id(tx)?, id),
        None => String::new(),
    };
    enqueue(
        tx,
        &TimelineChange {
            change: Some(Change::Retraction(TimelineRetraction {
                bucket_id: bucket.to_owned(),
                event_key,
            })),
        },
    )
}

fn decode(blob: &[u8]) -> Result<TimelineChange, AwError> {
    TimelineChange::decode(blob).map_err(|e| AwError::Corrupt(format!("a queued change: {e}")))
}

impl AwStore {
    /// Queues the newest version of up to `max` events whose last change is
    /// older than `settled_us` (µs since the epoch) and not queued yet.
    /// Returns how many were queued.
    pub fn queue_changes(&mut self, settled_us: i64, max: usize) -> Result<usize, AwError> {
        let tx = self.db.transaction()?;
        let store = store_id(&tx)?;
        // The agent's own buckets are not synced raw: their changes are
        // marked done, so they leave the index of pending changes and can be
        // forgotten.
        tx.prepare_cached(
            "UPDATE events SET synced = version WHERE synced < version \
             AND bucket IN (SELECT id FROM buckets WHERE client = ?1)",
        )?
        .execute(params![OWN_CLIENT])?;
        let rows = {
            let mut stmt = tx.prepare_cached(
                "SELECT e.id, e.bucket, b.type, b.client, e.version, e.start_us, e.end_us, e.data \
                 FROM events e JOIN buckets b ON b.id = e.bucket \
                 WHERE e.synced < e.version AND e.changed_us <= ?1 AND b.client != ?2 \
                 ORDER BY e.changed_us, e.id LIMIT ?3",
            )?;
            stmt.query_map(params![settled_us, OWN_CLIENT, max as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    TimelineEvent {
                        bucket_id: r.get(1)?,
                        bucket_type: r.get(2)?,
                        client: r.get(3)?,
                        event_key: String::new(),
                        version: r.get::<_, i64>(4)? as u64,
                        start_unix_us: r.get(5)?,
                        end_unix_us: r.get(6)?,
                        data_json: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        for (id, mut event) in rows.iter().cloned() {
            event.event_key = key(&store, id);
            tx.prepare_cached("UPDATE events SET synced = ?2 WHERE id = ?1")?
                .execute(params![id, event.version as i64])?;
            tx.prepare_cached("UPDATE buckets SET synced = 1 WHERE id = ?1")?
                .execute(params![event.bucket_id])?;
            enqueue(
                &tx,
                &TimelineChange {
                    change: Some(Change::Event(event)),
                },
            )?;
        }
        tx.commit()?;
        Ok(rows.len())
    }

    /// The batch to upload: the one formed before and not acknowledged, or
    /// a new one of up to `max` queued changes and [`MAX_BATCH_BYTES`] (at
    /// least one change; one while a refused batch's changes are being
    /// retried alone). None when nothing is queued.
    pub fn next_timeline_batch(&mut self, max: usize) -> Result<Option<TimelineBatch>, AwError> {
        let tx = self.db.transaction()?;
        let formed: Option<(u64, String, i64)> = tx
            .query_row("SELECT seq, batch_id, last_id FROM batch", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (seq, batch_id, last_id) = match formed {
            Some(formed) => formed,
            None => {
                let (last_seq, solo_until): (i64, i64) =
                    tx.query_row("SELECT last_seq, solo_until FROM sync", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                let first: Option<i64> =
                    tx.query_row("SELECT min(id) FROM queue", [], |r| r.get(0))?;
                let Some(first) = first else {
                    return Ok(None);
                };
                let take = if first <= solo_until { 1 } else { max.max(1) };
                let last_id = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT id, length(change) FROM queue ORDER BY id LIMIT ?1",
                    )?;
                    let sizes = stmt
                        .query_map(params![take as i64], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut bytes = 0;
                    let mut last_id = first;
                    for (id, size) in sizes {
                        bytes += size;
                        if id != first && bytes > MAX_BATCH_BYTES {
                            break;
                        }
                        last_id = id;
                    }
                    last_id
                };
                let batch_id = uuid::Uuid::new_v4().to_string();
                let seq = last_seq as u64 + 1;
                tx.execute(
                    "INSERT INTO batch (one, seq, batch_id, last_id) VALUES (1, ?1, ?2, ?3)",
                    params![seq as i64, batch_id, last_id],
                )?;
                (seq, batch_id, last_id)
            }
        };
        let changes = {
            let mut stmt =
                tx.prepare_cached("SELECT change FROM queue WHERE id <= ?1 ORDER BY id")?;
            let blobs = stmt
                .query_map(params![last_id], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            blobs
                .iter()
                .map(|b| decode(b))
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(Some(TimelineBatch {
            batch_id,
            seq,
            changes,
        }))
    }

    /// The gateway stored batch `seq`: its changes leave the queue.
    pub fn acknowledge_timeline(&mut self, seq: u64) -> Result<(), AwError> {
        let tx = self.db.transaction()?;
        let last_id: Option<i64> = tx
            .query_row(
                "SELECT last_id FROM batch WHERE seq = ?1",
                params![seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(last_id) = last_id {
            tx.execute("DELETE FROM queue WHERE id <= ?1", params![last_id])?;
            tx.execute("DELETE FROM batch", [])?;
            tx.execute(
                "UPDATE sync SET last_seq = max(last_seq, ?1)",
                params![seq as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The gateway refused batch `seq` for good (its number stays free): a
    /// batch of several changes is split, a single change set aside.
    pub fn refuse_timeline(&mut self, seq: u64, reason: &str) -> Result<TimelineRefused, AwError> {
        let tx = self.db.transaction()?;
        let last_id: i64 = tx
            .query_row(
                "SELECT last_id FROM batch WHERE seq = ?1",
                params![seq as i64],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| AwError::Corrupt(format!("no timeline batch {seq} to refuse")))?;
        let queued: Vec<(i64, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT id, change FROM queue WHERE id <= ?1 ORDER BY id")?;
            stmt.query_map(params![last_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        tx.execute("DELETE FROM batch", [])?;
        let outcome = match queued.as_slice() {
            [(id, blob)] => {
                tx.execute(
                    "INSERT INTO set_aside (change, reason, refused_at) VALUES (?1, ?2, ?3)",
                    params![blob, reason, wall_now_us()],
                )?;
                tx.execute("DELETE FROM queue WHERE id = ?1", params![id])?;
                TimelineRefused::SetAside {
                    change: decode(blob)?,
                }
            }
            _ => {
                tx.execute("UPDATE sync SET solo_until = ?1", params![last_id])?;
                TimelineRefused::Split {
                    changes: queued.len(),
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Takes the device the token stands for and the last timeline batch
    /// the platform holds of it. Another device than before: the formed
    /// batch is formed again and numbered after the platform's. The
    /// platform ahead of this store (it was lost or reset): numbering goes
    /// on after it. Returns true when batches were numbered again.
    pub fn align_timeline(&mut self, device_id: &str, platform_seq: u64) -> Result<bool, AwError> {
        let tx = self.db.transaction()?;
        let (device, last_seq): (Option<String>, i64) =
            tx.query_row("SELECT device_id, last_seq FROM sync", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let formed: Option<i64> = tx
            .query_row("SELECT seq FROM batch", [], |r| r.get(0))
            .optional()?;
        let platform_seq = platform_seq as i64;
        let other_device = device.as_deref().is_some_and(|d| d != device_id);
        // A formed batch numbered at the platform's last may be this one,
        // stored with its acknowledgement lost: it is sent again as it is and
        // recognised.
        let renumber = other_device || formed.is_some_and(|seq| seq < platform_seq);
        if renumber {
            tx.execute("DELETE FROM batch", [])?;
        }
        let last_seq = if other_device {
            platform_seq
        } else {
            last_seq.max(platform_seq)
        };
        tx.execute(
            "UPDATE sync SET device_id = ?1, last_seq = ?2",
            params![device_id, last_seq],
        )?;
        tx.commit()?;
        Ok(renumber)
    }

    /// Changes queued and not yet acknowledged.
    pub fn timeline_waiting(&self) -> Result<u64, AwError> {
        Ok(self
            .db
            .query_row("SELECT count(*) FROM queue", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Changes the gateway refused, with its reasons.
    pub fn timeline_set_aside(&self) -> Result<Vec<(TimelineChange, String)>, AwError> {
        let mut stmt = self
            .db
            .prepare("SELECT change, reason FROM set_aside ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(blob, reason)| Ok((decode(&blob)?, reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use serde_json::json;

    use super::*;
    use crate::aw::store::{NewBucket, ev};

    fn store(dir: &tempfile::TempDir) -> AwStore {
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        for (id, client, kind) in [
            ("window", "aw-watcher-window", "currentwindow"),
            ("vim", "aw-watcher-vim", "app.editor.activity"),
            ("own", OWN_CLIENT, "currentwindow"),
        ] {
            let new: NewBucket = serde_json::from_value(
                json!({"client": client, "type": kind, "hostname": "laptop"}),
            )
            .unwrap();
            store.create_bucket(id, &new).unwrap();
        }
        store
    }

    fn kinds(batch: &TimelineBatch) -> Vec<(String, String, u64)> {
        batch
            .changes
            .iter()
            .map(|c| match c.change.as_ref().unwrap() {
                Change::Event(e) => (e.bucket_id.clone(), e.event_key.clone(), e.version),
                Change::Retraction(r) => (r.bucket_id.clone(), r.event_key.clone(), 0),
            })
            .collect()
    }

    const FAR: i64 = i64::MAX;

    #[test]
    fn settled_changes_are_queued_once_in_order_with_retractions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        let a = s
            .heartbeat("window", &ev(0, 0.0, json!({"app": "code"})), 2.0)
            .unwrap();
        s.heartbeat("own", &ev(0, 0.0, json!({"app": "code"})), 2.0)
            .unwrap();
        // Changed after the settle cut: waits.
        assert_eq!(s.queue_changes(0, 100).unwrap(), 0);
        assert_eq!(s.queue_changes(FAR, 100).unwrap(), 1);
        assert_eq!(s.queue_changes(FAR, 100).unwrap(), 0, "queued once");
        // A heartbeat extends it: version 2; a vim event; then `a` deleted.
        s.heartbeat("window", &ev(1, 0.0, json!({"app": "code"})), 2.0)
            .unwrap();
        let v = s
            .insert("vim", &[ev(5, 3.0, json!({"file": "main.rs"}))])
            .unwrap();
        assert_eq!(s.queue_changes(FAR, 100).unwrap(), 2);
        s.delete_event("window", a.id.unwrap()).unwrap();
        // An event deleted before it was ever queued needs no retraction.
        let never = s.insert("vim", &[ev(9, 1.0, json!({}))]).unwrap();
        s.delete_event("vim", never[0].id.unwrap()).unwrap();
        s.delete_bucket("vim").unwrap();
        assert_eq!(s.timeline_waiting().unwrap(), 5);

        let batch = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!(batch.seq, 1);
        let store_id = match batch.changes[0].change.as_ref().unwrap() {
            Change::Event(e) => e.event_key.split('-').next().unwrap().to_owned(),
            Change::Retraction(_) => panic!("an event first"),
        };
        let akey = format!("{store_id}-{}", a.id.unwrap());
        let vkey = format!("{store_id}-{}", v[0].id.unwrap());
        assert_eq!(
            kinds(&batch),
            vec![
                ("window".into(), akey.clone(), 1),
                ("window".into(), akey.clone(), 2),
                ("vim".into(), vkey, 1),
                ("window".into(), akey, 0),
                ("vim".into(), String::new(), 0),
            ]
        );
        // Not acknowledged: the same batch again, also after reopening.
        drop(s);
        let mut s = AwStore::open(&dir.path().join("aw.db")).unwrap();
        assert_eq!(s.next_timeline_batch(100).unwrap().unwrap(), batch);
        s.acknowledge_timeline(1).unwrap();
        assert_eq!(s.timeline_waiting().unwrap(), 0);
        assert_eq!(s.next_timeline_batch(100).unwrap(), None);
        // The agent's own capture is never queued, and is forgotten.
        assert_eq!(
            s.forget_before(chrono::DateTime::from_timestamp(100, 0).unwrap())
                .unwrap(),
            1
        );
    }

    #[test]
    fn unqueued_changes_are_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.insert("window", &[ev(0, 1.0, json!({"app": "code"}))])
            .unwrap();
        let before = chrono::DateTime::from_timestamp(100, 0).unwrap();
        assert_eq!(s.forget_before(before).unwrap(), 0);
        s.queue_changes(FAR, 100).unwrap();
        assert_eq!(s.forget_before(before).unwrap(), 1);
        // Forgetting is not deleting: nothing more is queued.
        assert_eq!(s.timeline_waiting().unwrap(), 1);
    }

    #[test]
    fn a_refused_batch_is_split_and_a_refused_change_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        for at in 0..3 {
            s.insert("window", &[ev(at * 10, 1.0, json!({"n": at}))])
                .unwrap();
        }
        s.queue_changes(FAR, 100).unwrap();
        let batch = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!(batch.changes.len(), 3);
        assert_eq!(
            s.refuse_timeline(batch.seq, "bad").unwrap(),
            TimelineRefused::Split { changes: 3 }
        );
        // One at a time, under the same free sequence number.
        let first = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!((first.seq, first.changes.len()), (1, 1));
        assert_ne!(first.batch_id, batch.batch_id);
        s.acknowledge_timeline(1).unwrap();
        let second = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!((second.seq, second.changes.len()), (2, 1));
        assert!(matches!(
            s.refuse_timeline(2, "ends in the future").unwrap(),
            TimelineRefused::SetAside { .. }
        ));
        let aside = s.timeline_set_aside().unwrap();
        assert_eq!(aside.len(), 1);
        assert_eq!(aside[0].1, "ends in the future");
        let third = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!((third.seq, third.changes.len()), (2, 1));
        s.acknowledge_timeline(2).unwrap();
        assert_eq!(s.next_timeline_batch(100).unwrap(), None);
    }

    #[test]
    fn batches_hold_at_most_max_batch_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        let big = "x".repeat(60 * 1024);
        for at in 0..7 {
            s.insert("vim", &[ev(at, 1.0, json!({"text": big}))])
                .unwrap();
        }
        s.queue_changes(FAR, 100).unwrap();
        let first = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!(first.changes.len(), 3);
        s.acknowledge_timeline(first.seq).unwrap();
        assert_eq!(
            s.next_timeline_batch(100).unwrap().unwrap().changes.len(),
            3
        );
    }

    #[test]
    fn batches_are_numbered_after_the_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.insert("window", &[ev(0, 1.0, json!({}))]).unwrap();
        s.queue_changes(FAR, 100).unwrap();
        assert!(!s.align_timeline("d1", 0).unwrap());
        let batch = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!(batch.seq, 1);
        // The platform says it holds 1: maybe this batch; it is kept.
        assert!(!s.align_timeline("d1", 1).unwrap());
        assert_eq!(s.next_timeline_batch(100).unwrap().unwrap(), batch);
        // It holds 7 (this store was reset): numbered after them.
        assert!(s.align_timeline("d1", 7).unwrap());
        let again = s.next_timeline_batch(100).unwrap().unwrap();
        assert_eq!(again.seq, 8);
        assert_ne!(again.batch_id, batch.batch_id);
        // Another device: its numbering.
        assert!(s.align_timeline("d2", 2).unwrap());
        assert_eq!(s.next_timeline_batch(100).unwrap().unwrap().seq, 3);
    }

    #[test]
    fn a_schema_1_store_is_upgraded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aw.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE buckets (id TEXT PRIMARY KEY, name TEXT, type TEXT NOT NULL,
                     client TEXT NOT NULL, hostname TEXT NOT NULL, created INTEGER NOT NULL,
                     data TEXT NOT NULL);
                 CREATE TABLE events (id INTEGER PRIMARY KEY,
                     bucket TEXT NOT NULL REFERENCES buckets (id) ON DELETE CASCADE,
                     start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, data TEXT NOT NULL);
                 CREATE INDEX events_by_time ON events (bucket, start_us);
                 INSERT INTO buckets VALUES ('w', NULL, 'currentwindow', 'aw-watcher-window',
                     'laptop', 0, '{}');
                 INSERT INTO events VALUES (4, 'w', 0, 1000000, '{\"app\": \"code\"}');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut s = AwStore::open(&path).unwrap();
        assert_eq!(s.event("w", 4).unwrap().unwrap().data["app"], "code");
        // Kept events are synced too.
        assert_eq!(s.queue_changes(FAR, 100).unwrap(), 1);
        // Deleting the highest id does not let it be used again.
        s.delete_event("w", 4).unwrap();
        let next = s.insert("w", &[ev(5, 1.0, json!({}))]).unwrap();
        assert_eq!(next[0].id, Some(5));
        drop(s);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 3)
            .unwrap();
        assert!(matches!(
            AwStore::open(&path),
            Err(AwError::NewerSchema { found: 3 })
        ));
    }
}
