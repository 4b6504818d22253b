//! The local outbox: every closed span is committed to a SQLite file before
//! anything is uploaded. Spans are grouped into batches, each with a stable
//! batch id and the next per-device sequence number, and deleted only when
//! the gateway acknowledged their batch. A batch, once formed, is sent again
//! as it is (same id, same sequence, same spans) until it is acknowledged,
//! so a crash at any point neither loses a span nor counts one twice.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::heartbeat::{Event, SpanData};

/// What can go wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// SQLite failed.
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A batch ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Stable id: the same on every attempt.
    pub batch_id: String,
    /// Per-device sequence number, from 1, without gaps.
    pub seq: u64,
    /// The spans, in start order.
    pub spans: Vec<Event>,
}

/// The outbox in one SQLite file.
pub struct Outbox {
    db: Connection,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS spans (
        id        INTEGER PRIMARY KEY,
        start_ms  INTEGER NOT NULL,
        end_ms    INTEGER NOT NULL,
        app       TEXT NOT NULL,
        title     TEXT NOT NULL,
        url       TEXT,
        active    INTEGER NOT NULL,
        batch_seq INTEGER
    );
    CREATE INDEX IF NOT EXISTS spans_by_batch ON spans (batch_seq, start_ms);
    CREATE TABLE IF NOT EXISTS batches (
        seq      INTEGER PRIMARY KEY,
        batch_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS device (
        one      INTEGER PRIMARY KEY CHECK (one = 1),
        last_seq INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO device (one, last_seq) VALUES (1, 0);
";

impl Outbox {
    /// Opens (creating) the outbox at `path`. Every write is durable when
    /// the call returns (WAL with `synchronous = FULL`).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db })
    }

    /// Commits a closed span.
    pub fn push(&mut self, span: &Event) -> Result<(), OutboxError> {
        self.db.execute(
            "INSERT INTO spans (start_ms, end_ms, app, title, url, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                span.start_ms,
                span.end_ms(),
                span.data.app,
                span.data.title,
                span.data.url,
                span.data.active
            ],
        )?;
        Ok(())
    }

    /// The batch to upload next: the oldest one formed and not yet
    /// acknowledged, or else a new one of up to `max_spans` waiting spans.
    /// None when nothing waits.
    pub fn next_batch(&mut self, max_spans: usize) -> Result<Option<Batch>, OutboxError> {
        let tx = self.db.transaction()?;
        let pending: Option<(u64, String)> = tx
            .query_row(
                "SELECT seq, batch_id FROM batches ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?;
        let (seq, batch_id) = match pending {
            Some(p) => p,
            None => {
                let waiting: i64 = tx.query_row(
                    "SELECT count(*) FROM spans WHERE batch_seq IS NULL",
                    [],
                    |r| r.get(0),
                )?;
                if waiting == 0 {
                    return Ok(None);
                }
                let seq: i64 = tx.query_row("SELECT last_seq + 1 FROM device", [], |r| r.get(0))?;
                let batch_id = uuid::Uuid::now_v7().simple().to_string();
                tx.execute("UPDATE device SET last_seq = ?1", params![seq])?;
                tx.execute(
                    "INSERT INTO batches (seq, batch_id) VALUES (?1, ?2)",
                    params![seq, batch_id],
                )?;
                tx.execute(
                    "UPDATE spans SET batch_seq = ?1 WHERE id IN ( \
                       SELECT id FROM spans WHERE batch_seq IS NULL ORDER BY start_ms, id LIMIT ?2)",
                    params![seq, max_spans as i64],
                )?;
                (seq as u64, batch_id)
            }
        };
        let spans = {
            let mut stmt = tx.prepare(
                "SELECT start_ms, end_ms, app, title, url, active FROM spans \
                 WHERE batch_seq = ?1 ORDER BY start_ms, id",
            )?;
            let rows = stmt.query_map(params![seq as i64], |r| {
                let start_ms: i64 = r.get(0)?;
                let end_ms: i64 = r.get(1)?;
                Ok(Event {
                    start_ms,
                    duration_ms: end_ms - start_ms,
                    data: SpanData {
                        app: r.get(2)?,
                        title: r.get(3)?,
                        url: r.get(4)?,
                        active: r.get(5)?,
                    },
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(Some(Batch {
            batch_id,
            seq,
            spans,
        }))
    }

    /// The gateway acknowledged batch `seq`: its spans leave the outbox.
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM spans WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// The gateway refused batch `seq` for good (bad spans): its spans are
    /// dropped and its sequence number is free again (the gateway did not
    /// use it up). Returns how many spans were dropped.
    pub fn reject(&mut self, seq: u64) -> Result<usize, OutboxError> {
        let tx = self.db.transaction()?;
        let dropped = tx.execute(
            "DELETE FROM spans WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
        tx.execute(
            "UPDATE device SET last_seq = ?1 WHERE last_seq = ?2",
            params![seq as i64 - 1, seq as i64],
        )?;
        tx.commit()?;
        Ok(dropped)
    }

    /// Spans waiting (in a batch or not).
    pub fn waiting(&self) -> Result<u64, OutboxError> {
        Ok(self
            .db
            .query_row("SELECT count(*) FROM spans", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start_s: i64, app: &str) -> Event {
        Event {
            start_ms: start_s * 1000,
            duration_ms: 5000,
            data: SpanData {
                app: app.into(),
                title: "t".into(),
                url: None,
                active: true,
            },
        }
    }

    #[test]
    fn batches_are_stable_until_acknowledged_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.next_batch(2).unwrap(), None);
        for s in [0, 10, 20] {
            outbox.push(&span(s, "code")).unwrap();
        }
        let first = outbox.next_batch(2).unwrap().unwrap();
        assert_eq!((first.seq, first.spans.len()), (1, 2));
        // Asked again (an upload failed): the very same batch.
        assert_eq!(outbox.next_batch(2).unwrap().unwrap(), first);
        // Reopened (the agent restarted): still the same batch.
        drop(outbox);
        let mut outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.next_batch(2).unwrap().unwrap(), first);
        outbox.acknowledge(first.seq).unwrap();
        let second = outbox.next_batch(2).unwrap().unwrap();
        assert_eq!((second.seq, second.spans.len()), (2, 1));
        assert_ne!(second.batch_id, first.batch_id);
        assert_eq!(second.spans[0].start_ms, 20_000);
        outbox.acknowledge(second.seq).unwrap();
        assert_eq!(
            (outbox.waiting().unwrap(), outbox.next_batch(2).unwrap()),
            (0, None)
        );
    }

    #[test]
    fn a_rejected_batch_frees_its_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let bad = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(outbox.reject(bad.seq).unwrap(), 1);
        outbox.push(&span(10, "code")).unwrap();
        let next = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(next.seq, bad.seq);
        assert_ne!(next.batch_id, bad.batch_id);
    }
}
