//! The local outbox: every closed span is committed to a SQLite file before
//! anything is uploaded. Spans are grouped into batches, each with a stable
//! batch id and the next per-device sequence number, and deleted only when
//! the gateway acknowledged their batch. A batch, once formed, is sent again
//! as it is (same id, same sequence, same spans) until it is acknowledged,
//! so a crash at any point neither loses a span nor counts one twice.
//!
//! Time the employee deleted after it became spans waits here too, as
//! retractions, and travels in the span batches: never before the spans it
//! withdraws (they are in the same batch or an earlier one).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use trackhrs_domain::categories::CategoryRule;

use crate::heartbeat::{Event, SpanData};
use crate::privacy::Policy;

/// What can go wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// SQLite failed.
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer agent.
    #[error("the outbox was written by a newer agent (schema {found}); upgrade the agent")]
    NewerSchema {
        /// Its schema version.
        found: i64,
    },
    /// What the outbox holds cannot be read back.
    #[error("outbox: {0}")]
    Corrupt(String),
    /// Its file cannot be created or made private.
    #[error("outbox file: {0}")]
    File(#[from] std::io::Error),
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
    /// Time withdrawn by the employee (start, end in ms since the epoch),
    /// in the order it was queued.
    pub retractions: Vec<(i64, i64)>,
}

/// What became of a batch the gateway refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The batch held several spans: they wait again, to be sent one per
    /// batch, so one bad span does not take good ones with it.
    Split {
        /// Spans released.
        spans: usize,
    },
    /// The batch held one span: it was set aside (kept in the outbox's
    /// `set_aside` table with the reason, never sent again).
    SetAside {
        /// The span.
        span: Event,
    },
    /// The batch held retractions only: they were dropped (a retraction
    /// is never sent again once the gateway refused it on its own).
    Dropped {
        /// Retractions dropped.
        retractions: usize,
    },
}

/// The outbox in one SQLite file.
pub struct Outbox {
    db: Connection,
}

/// The schema version this agent writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
    CREATE TABLE spans (
        id        INTEGER PRIMARY KEY,
        start_ms  INTEGER NOT NULL,
        end_ms    INTEGER NOT NULL,
        app       TEXT NOT NULL,
        title     TEXT NOT NULL,
        url       TEXT,
        active    INTEGER NOT NULL,
        batch_seq INTEGER,
        solo      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX spans_by_batch ON spans (batch_seq, start_ms);
    CREATE INDEX spans_by_end ON spans (end_ms);
    CREATE TABLE batches (
        seq      INTEGER PRIMARY KEY,
        batch_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE device (
        one       INTEGER PRIMARY KEY CHECK (one = 1),
        device_id TEXT,
        last_seq  INTEGER NOT NULL,
        last_end  INTEGER,
        combined_until INTEGER
    );
    INSERT INTO device (one, last_seq) VALUES (1, 0);
    CREATE TABLE policy (
        one            INTEGER PRIMARY KEY CHECK (one = 1),
        capture_titles INTEGER NOT NULL,
        capture_urls   INTEGER NOT NULL
    );
    CREATE TABLE set_aside (
        id          INTEGER PRIMARY KEY,
        start_ms    INTEGER NOT NULL,
        end_ms      INTEGER NOT NULL,
        app         TEXT NOT NULL,
        title       TEXT NOT NULL,
        url         TEXT,
        active      INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        refused_at  INTEGER NOT NULL
    );
";

/// Version 2: the org's classification rules, kept like the policy.
const SCHEMA_V2: &str = "
    CREATE TABLE rules (
        one     INTEGER PRIMARY KEY CHECK (one = 1),
        version INTEGER NOT NULL,
        rules   TEXT NOT NULL
    );
";

/// Version 3: time the employee deleted after it became spans, waiting to
/// be sent in a batch (`batch_seq`) like the spans.
const SCHEMA_V3: &str = "
    CREATE TABLE retractions (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        start_ms  INTEGER NOT NULL,
        end_ms    INTEGER NOT NULL,
        batch_seq INTEGER
    );
    CREATE INDEX retractions_by_batch ON retractions (batch_seq, id);
";

fn span_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
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
}

fn insert_span(db: &Connection, span: &Event) -> Result<(), OutboxError> {
    db.prepare_cached(
        "INSERT INTO spans (start_ms, end_ms, app, title, url, active) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        span.start_ms,
        span.end_ms(),
        span.data.app,
        span.data.title,
        span.data.url,
        span.data.active
    ])?;
    Ok(())
}

fn batch_spans(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<Vec<Event>, OutboxError> {
    let mut stmt = tx.prepare_cached(
        "SELECT start_ms, end_ms, app, title, url, active FROM spans \
         WHERE batch_seq = ?1 ORDER BY start_ms, id",
    )?;
    let rows = stmt.query_map(params![seq as i64], span_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn batch_retractions(
    tx: &rusqlite::Transaction<'_>,
    seq: u64,
) -> Result<Vec<(i64, i64)>, OutboxError> {
    let mut stmt = tx.prepare_cached(
        "SELECT start_ms, end_ms FROM retractions WHERE batch_seq = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The latest end of any span waiting or acknowledged.
fn high_water(db: &Connection) -> Result<Option<i64>, OutboxError> {
    let (waiting, acknowledged): (Option<i64>, Option<i64>) = db
        .prepare_cached("SELECT (SELECT max(end_ms) FROM spans), last_end FROM device")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(waiting.max(acknowledged))
}

/// What a new batch takes: up to how many waiting spans (one when the
/// oldest waiting span was released from a refused batch) and whether
/// retractions may join it (not when it is such a span's: a bad retraction
/// must not get a good span set aside). None when nothing waits.
fn new_batch_shape(
    tx: &rusqlite::Transaction<'_>,
    max_spans: usize,
) -> Result<Option<(usize, bool)>, OutboxError> {
    let oldest: Option<bool> = tx
        .query_row(
            "SELECT solo FROM spans WHERE batch_seq IS NULL ORDER BY start_ms, id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match oldest {
        Some(true) => Some((1, false)),
        Some(false) => Some((max_spans.max(1), true)),
        None => tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM retractions WHERE batch_seq IS NULL)",
                [],
                |r| r.get::<_, bool>(0),
            )?
            .then_some((0, true)),
    })
}

/// Dissolves every batch formed: their spans and retractions wait again.
fn dissolve_batches(tx: &rusqlite::Transaction<'_>) -> Result<(), OutboxError> {
    tx.execute_batch(
        "UPDATE spans SET batch_seq = NULL; \
         UPDATE retractions SET batch_seq = NULL; \
         DELETE FROM batches;",
    )?;
    Ok(())
}

/// Moves the spans of batch `seq` to `set_aside` with `reason`.
fn set_aside(tx: &rusqlite::Transaction<'_>, seq: u64, reason: &str) -> Result<(), OutboxError> {
    tx.execute(
        "INSERT INTO set_aside (start_ms, end_ms, app, title, url, active, reason, refused_at) \
         SELECT start_ms, end_ms, app, title, url, active, ?2, \
                CAST(strftime('%s', 'now') AS INTEGER) * 1000 \
         FROM spans WHERE batch_seq = ?1",
        params![seq as i64, reason],
    )?;
    tx.execute(
        "DELETE FROM spans WHERE batch_seq = ?1",
        params![seq as i64],
    )?;
    Ok(())
}

/// Forms batch number `last_seq + 1` of what waits (see
/// [`Outbox::next_batch`]); None when nothing waits.
fn form_batch(
    tx: &rusqlite::Transaction<'_>,
    max_spans: usize,
) -> Result<Option<(u64, String)>, OutboxError> {
    let Some((spans, with_retractions)) = new_batch_shape(tx, max_spans)? else {
        return Ok(None);
    };
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
        params![seq, spans as i64],
    )?;
    if with_retractions {
        // Only retractions no span left waiting outside a batch starts
        // before the end of: the spans they withdraw are in this batch or
        // an earlier one.
        tx.execute(
            "UPDATE retractions SET batch_seq = ?1 WHERE id IN ( \
               SELECT id FROM retractions WHERE batch_seq IS NULL AND end_ms <= coalesce( \
                 (SELECT min(start_ms) FROM spans WHERE batch_seq IS NULL), ?3) \
               ORDER BY id LIMIT ?2)",
            params![seq, max_spans.max(1) as i64, i64::MAX],
        )?;
    }
    Ok(Some((seq as u64, batch_id)))
}

impl Outbox {
    /// Fills the file to the last page it may have (`full`), as a disk
    /// that fills up would: every write that needs room then fails with
    /// SQLite's "database or disk is full"; or gives the room back.
    #[cfg(test)]
    pub(crate) fn fill(&self, full: bool) {
        if !full {
            self.db
                .execute_batch("DROP TABLE filler; PRAGMA max_page_count = 1073741823;")
                .unwrap();
            return;
        }
        self.db
            .execute_batch("CREATE TABLE filler (b BLOB)")
            .unwrap();
        let pages: u64 = self
            .db
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        self.db
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
        for size in [4096, 256, 16, 1] {
            while self
                .db
                .execute("INSERT INTO filler VALUES (zeroblob(?1))", [size])
                .is_ok()
            {}
        }
    }

    /// Opens (creating, its owner's only) the outbox at `path`. Every
    /// write is durable when the call returns (WAL with `synchronous =
    /// FULL`).
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        crate::private::file(path)?;
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        let tx = db.transaction()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::NewerSchema { found: version });
        }
        if version < 1 {
            tx.execute_batch(SCHEMA)?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_V2)?;
        }
        if version < 3 {
            tx.execute_batch(SCHEMA_V3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// Commits a closed span.
    pub fn push(&mut self, span: &Event) -> Result<(), OutboxError> {
        insert_span(&self.db, span)
    }

    /// Commits `spans` (in order) in one transaction: all or none.
    pub fn push_all(&mut self, spans: &[Event]) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        for span in spans {
            insert_span(&tx, span)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Commits `spans` (in order) and, in the same transaction, notes that
    /// the ActivityWatch timelines were combined up to `until_ms`: a crash
    /// cannot commit one without the other.
    pub fn push_combined(&mut self, spans: &[Event], until_ms: i64) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        for span in spans {
            insert_span(&tx, span)?;
        }
        tx.execute("UPDATE device SET combined_until = ?1", params![until_ms])?;
        tx.commit()?;
        Ok(())
    }

    /// How far the ActivityWatch timelines were combined into spans.
    pub fn combined_until(&self) -> Result<Option<i64>, OutboxError> {
        Ok(self
            .db
            .query_row("SELECT combined_until FROM device", [], |r| r.get(0))?)
    }

    /// The latest end of any span waiting or acknowledged: a new span must
    /// not start before it (the gateway refuses spans that overlap what the
    /// device already sent). Spans set aside do not count.
    pub fn high_water(&self) -> Result<Option<i64>, OutboxError> {
        high_water(&self.db)
    }

    /// Queues the retraction of `ranges` (start, end in ms since the
    /// epoch), time the employee deleted, in one transaction. Each is cut
    /// at the high-water mark (spans that start later are never about the
    /// deleted time) and dropped when nothing is left of it, or when no
    /// span was ever recorded. Returns how many were queued.
    pub fn retract(&mut self, ranges: &[(i64, i64)]) -> Result<usize, OutboxError> {
        let tx = self.db.transaction()?;
        let Some(high) = high_water(&tx)? else {
            return Ok(0);
        };
        let mut queued = 0;
        for &(start, end) in ranges {
            let end = end.min(high);
            if start < end {
                tx.prepare_cached("INSERT INTO retractions (start_ms, end_ms) VALUES (?1, ?2)")?
                    .execute(params![start, end])?;
                queued += 1;
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// The batch to upload next: the oldest one formed and not yet
    /// acknowledged, or else a new one of up to `max_spans` waiting spans
    /// (one, when the oldest waiting span was released from a refused
    /// batch) and up to `max_spans` waiting retractions, each only once no
    /// span waiting outside a batch starts before its end (so it never
    /// travels before the spans it withdraws). None when nothing waits.
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
            None => match form_batch(&tx, max_spans)? {
                Some(formed) => formed,
                None => return Ok(None),
            },
        };
        let spans = batch_spans(&tx, seq)?;
        let retractions = batch_retractions(&tx, seq)?;
        tx.commit()?;
        Ok(Some(Batch {
            batch_id,
            seq,
            spans,
            retractions,
        }))
    }

    /// The gateway acknowledged batch `seq`: its spans and retractions leave
    /// the outbox, and the spans' end is remembered as the device's
    /// high-water mark.
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "UPDATE device SET last_end = max(coalesce(last_end, 0), \
               coalesce((SELECT max(end_ms) FROM spans WHERE batch_seq = ?1), 0))",
            params![seq as i64],
        )?;
        tx.execute(
            "DELETE FROM spans WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        tx.execute(
            "DELETE FROM retractions WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// The gateway refused batch `seq` for good (bad spans or
    /// retractions); its sequence number is free again (the gateway did not
    /// use it up). A batch of retractions only is dropped. A batch of one
    /// span alone is set aside with `reason`, kept for the user to see. Any
    /// other batch is split: its spans are sent again one per batch, its
    /// retractions wait again (never with those spans).
    pub fn refuse(&mut self, seq: u64, reason: &str) -> Result<Refused, OutboxError> {
        let tx = self.db.transaction()?;
        let spans = batch_spans(&tx, seq)?;
        let retractions = batch_retractions(&tx, seq)?;
        let refused = match (spans.as_slice(), retractions.len()) {
            ([], retractions) => {
                tx.execute(
                    "DELETE FROM retractions WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                Refused::Dropped { retractions }
            }
            ([span], 0) => {
                set_aside(&tx, seq, reason)?;
                Refused::SetAside { span: span.clone() }
            }
            (spans, _) => {
                tx.execute(
                    "UPDATE spans SET batch_seq = NULL, solo = 1 WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                tx.execute(
                    "UPDATE retractions SET batch_seq = NULL WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                Refused::Split { spans: spans.len() }
            }
        };
        tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
        tx.execute(
            "UPDATE device SET last_seq = ?1 WHERE last_seq = ?2",
            params![seq as i64 - 1, seq as i64],
        )?;
        tx.commit()?;
        Ok(refused)
    }

    /// Binds the outbox to the device the gateway named for the token. A
    /// different device (the agent was enrolled again) numbers its batches
    /// from 1: batches formed for the old device are dissolved, their spans
    /// and retractions wait again. Returns true when that happened.
    pub fn bind_device(&mut self, device_id: &str) -> Result<bool, OutboxError> {
        let tx = self.db.transaction()?;
        let bound: Option<String> =
            tx.query_row("SELECT device_id FROM device", [], |r| r.get(0))?;
        let changed = bound.as_deref().is_some_and(|b| b != device_id);
        if changed {
            dissolve_batches(&tx)?;
            tx.execute("UPDATE device SET last_seq = 0, last_end = NULL", [])?;
        }
        if bound.as_deref() != Some(device_id) {
            tx.execute("UPDATE device SET device_id = ?1", params![device_id])?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Aligns the outbox with what the gateway stored for the device. When
    /// the gateway stored a later batch than this outbox ever numbered (the
    /// outbox was lost or reset), none of the batches formed here can be
    /// among the stored ones: they are dissolved and numbering goes on after
    /// the gateway's. The end of the last stored span becomes a high-water
    /// mark. Returns true when batches were numbered again.
    pub fn align(
        &mut self,
        stored_seq: u64,
        stored_end_ms: Option<i64>,
    ) -> Result<bool, OutboxError> {
        let tx = self.db.transaction()?;
        let local: i64 = tx.query_row("SELECT last_seq FROM device", [], |r| r.get(0))?;
        let behind = (local as u64) < stored_seq;
        if behind {
            dissolve_batches(&tx)?;
            tx.execute(
                "UPDATE device SET last_seq = ?1",
                params![stored_seq as i64],
            )?;
        }
        if let Some(end) = stored_end_ms {
            tx.execute(
                "UPDATE device SET last_end = max(coalesce(last_end, ?1), ?1)",
                params![end],
            )?;
        }
        tx.commit()?;
        Ok(behind)
    }

    /// The privacy policy last received from the gateway, if any.
    pub fn policy(&self) -> Result<Option<Policy>, OutboxError> {
        Ok(self
            .db
            .query_row("SELECT capture_titles, capture_urls FROM policy", [], |r| {
                Ok(Policy {
                    capture_titles: r.get(0)?,
                    capture_urls: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Remembers the policy, so a restart offline obeys it.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), OutboxError> {
        self.db.execute(
            "INSERT INTO policy (one, capture_titles, capture_urls) VALUES (1, ?1, ?2) \
             ON CONFLICT (one) DO UPDATE SET capture_titles = ?1, capture_urls = ?2",
            params![policy.capture_titles, policy.capture_urls],
        )?;
        Ok(())
    }

    /// The org's classification rules last received from the gateway (their
    /// version and the rules in force), if any.
    pub fn rules(&self) -> Result<Option<(u32, Vec<CategoryRule>)>, OutboxError> {
        let row: Option<(i64, String)> = self
            .db
            .query_row("SELECT version, rules FROM rules", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(version, json)| {
            serde_json::from_str(&json)
                .map(|rules| (version as u32, rules))
                .map_err(|e| OutboxError::Corrupt(format!("stored rules: {e}")))
        })
        .transpose()
    }

    /// Remembers the rules, so a restart offline classifies with them.
    pub fn set_rules(&mut self, version: u32, rules: &[CategoryRule]) -> Result<(), OutboxError> {
        let json = serde_json::to_string(rules)
            .map_err(|e| OutboxError::Corrupt(format!("rules: {e}")))?;
        self.db.execute(
            "INSERT INTO rules (one, version, rules) VALUES (1, ?1, ?2) \
             ON CONFLICT (one) DO UPDATE SET version = ?1, rules = ?2",
            params![i64::from(version), json],
        )?;
        Ok(())
    }

    /// Spans waiting (in a batch or not).
    pub fn waiting(&self) -> Result<u64, OutboxError> {
        Ok(self
            .db
            .query_row("SELECT count(*) FROM spans", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Every span waiting (in a batch or not), in start order: what has
    /// not reached the gateway yet.
    pub fn spans(&self) -> Result<Vec<Event>, OutboxError> {
        let mut stmt = self.db.prepare(
            "SELECT start_ms, end_ms, app, title, url, active FROM spans ORDER BY start_ms, id",
        )?;
        let rows = stmt.query_map([], span_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Spans the gateway refused, with the reasons, oldest first.
    pub fn set_aside(&self) -> Result<Vec<(Event, String)>, OutboxError> {
        let mut stmt = self.db.prepare(
            "SELECT start_ms, end_ms, app, title, url, active, reason FROM set_aside ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| Ok((span_row(r)?, r.get(6)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
    fn an_outbox_behind_the_gateway_numbers_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let formed = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(formed.seq, 1);
        // The gateway has stored up to batch 40 (another outbox's), ending
        // at 100 s: the batch is formed again as 41.
        assert!(outbox.align(40, Some(100_000)).unwrap());
        let again = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((again.seq, again.spans.len()), (41, 1));
        assert_eq!(outbox.high_water().unwrap(), Some(100_000));
        // In step (the usual case, a reply lost included): nothing changes.
        assert!(!outbox.align(41, Some(100_000)).unwrap());
        assert_eq!(outbox.next_batch(10).unwrap().unwrap(), again);
    }

    #[test]
    fn a_refused_batch_frees_its_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let bad = outbox.next_batch(10).unwrap().unwrap();
        assert!(matches!(
            outbox.refuse(bad.seq, "in the future").unwrap(),
            Refused::SetAside { .. }
        ));
        outbox.push(&span(10, "code")).unwrap();
        let next = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(next.seq, bad.seq);
        assert_ne!(next.batch_id, bad.batch_id);
    }

    #[test]
    fn an_outbox_of_schema_1_is_upgraded_in_place_and_keeps_its_spans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            // What an agent of schema 1 left behind: one span waiting.
            let db = Connection::open(&path).unwrap();
            db.execute_batch(SCHEMA).unwrap();
            db.pragma_update(None, "user_version", 1).unwrap();
            insert_span(&db, &span(0, "code")).unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.spans().unwrap(), vec![span(0, "code")]);
        assert_eq!(outbox.rules().unwrap(), None);
        let rules = vec![CategoryRule {
            name: vec!["Work".into(), "Editing".into()],
            regex: Some("gedit|vim".into()),
            ignore_case: true,
            score: Some(80),
        }];
        outbox.set_rules(3, &rules).unwrap();
        outbox.set_rules(4, &rules).unwrap();
        assert_eq!(outbox.retract(&[(0, 1000)]).unwrap(), 1);
        drop(outbox);
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.rules().unwrap(), Some((4, rules)));
        let version: i64 = outbox
            .db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn an_outbox_of_a_newer_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(db);
        assert!(matches!(
            Outbox::open(&path),
            Err(OutboxError::NewerSchema { found }) if found == SCHEMA_VERSION + 1
        ));
    }

    /// The retractions waiting, in or out of a batch: (start, end, batch).
    fn retractions(outbox: &Outbox) -> Vec<(i64, i64, Option<i64>)> {
        let mut stmt = outbox
            .db
            .prepare("SELECT start_ms, end_ms, batch_seq FROM retractions ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn an_outbox_of_schema_2_is_upgraded_and_keeps_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(SCHEMA).unwrap();
            db.execute_batch(SCHEMA_V2).unwrap();
            db.pragma_update(None, "user_version", 2).unwrap();
            insert_span(&db, &span(0, "code")).unwrap();
            db.execute_batch(
                "INSERT INTO batches (seq, batch_id) VALUES (1, 'b1'); \
                 UPDATE spans SET batch_seq = 1; UPDATE device SET last_seq = 1;",
            )
            .unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(
            (batch.batch_id.as_str(), batch.seq, batch.spans.len()),
            ("b1", 1, 1)
        );
        assert!(batch.retractions.is_empty());
        assert_eq!(outbox.retract(&[(0, 1000)]).unwrap(), 1);
    }

    #[test]
    fn retractions_are_cut_at_the_high_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        // No span ever recorded: nothing to withdraw.
        assert_eq!(outbox.retract(&[(0, 10_000)]).unwrap(), 0);
        assert_eq!(outbox.next_batch(10).unwrap(), None);
        outbox.push(&span(0, "code")).unwrap();
        outbox.push(&span(10, "code")).unwrap();
        // Cut at 15 s (the last span's end); wholly after it, or empty:
        // dropped.
        let queued = outbox
            .retract(&[(1000, 20_000), (15_000, 30_000), (3000, 3000)])
            .unwrap();
        assert_eq!(queued, 1);
        assert_eq!(retractions(&outbox), vec![(1000, 15_000, None)]);
        // Acknowledged spans count too.
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.retractions, vec![(1000, 15_000)]);
        outbox.acknowledge(batch.seq).unwrap();
        assert_eq!(outbox.retract(&[(12_000, 40_000)]).unwrap(), 1);
        assert_eq!(retractions(&outbox), vec![(12_000, 15_000, None)]);
    }

    #[test]
    fn a_retraction_never_travels_before_the_spans_it_withdraws() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        for s in [0, 10, 20] {
            outbox.push(&span(s, "code")).unwrap();
        }
        // Withdraws the spans at 0 s and 10 s.
        outbox.retract(&[(0, 12_000)]).unwrap();
        let first = outbox.next_batch(1).unwrap().unwrap();
        assert_eq!(first.spans[0].start_ms, 0);
        assert!(first.retractions.is_empty(), "the span at 10 s waits");
        outbox.acknowledge(first.seq).unwrap();
        let second = outbox.next_batch(1).unwrap().unwrap();
        assert_eq!(second.spans[0].start_ms, 10_000);
        assert_eq!(second.retractions, vec![(0, 12_000)]);
        outbox.acknowledge(second.seq).unwrap();
        let third = outbox.next_batch(1).unwrap().unwrap();
        assert_eq!(third.spans[0].start_ms, 20_000);
        assert!(third.retractions.is_empty());
        outbox.acknowledge(third.seq).unwrap();
        assert!(retractions(&outbox).is_empty());
        assert_eq!(outbox.next_batch(1).unwrap(), None);
    }

    #[test]
    fn a_batch_of_retractions_only_is_sent_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let spans = outbox.next_batch(10).unwrap().unwrap();
        outbox.acknowledge(spans.seq).unwrap();
        outbox.retract(&[(0, 2000), (3000, 4000)]).unwrap();
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.seq, 2);
        assert!(batch.spans.is_empty());
        assert_eq!(batch.retractions, vec![(0, 2000), (3000, 4000)]);
        outbox.acknowledge(batch.seq).unwrap();
        assert!(retractions(&outbox).is_empty());
        assert_eq!(outbox.next_batch(10).unwrap(), None);
        assert_eq!(outbox.high_water().unwrap(), Some(5000));
    }

    #[test]
    fn a_refused_batch_releases_its_retractions_or_drops_them_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        outbox.retract(&[(0, 1000)]).unwrap();
        // One span with retractions: which is bad is unknown, so neither is
        // set aside; the span goes alone, the retraction after it.
        let both = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((both.spans.len(), both.retractions.len()), (1, 1));
        assert_eq!(
            outbox.refuse(both.seq, "bad").unwrap(),
            Refused::Split { spans: 1 }
        );
        assert_eq!(retractions(&outbox), vec![(0, 1000, None)]);
        let alone = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(alone.seq, both.seq);
        assert_eq!((alone.spans.len(), alone.retractions.len()), (1, 0));
        outbox.acknowledge(alone.seq).unwrap();
        let only = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((only.spans.len(), only.retractions.len()), (0, 1));
        assert_eq!(
            outbox.refuse(only.seq, "bad").unwrap(),
            Refused::Dropped { retractions: 1 }
        );
        assert!(retractions(&outbox).is_empty());
        assert_eq!(outbox.next_batch(10).unwrap(), None);
        // The sequence number is free again.
        outbox.push(&span(10, "code")).unwrap();
        assert_eq!(outbox.next_batch(10).unwrap().unwrap().seq, only.seq);
    }

    #[test]
    fn a_batch_with_retractions_is_the_same_after_reopening_and_dissolved_with_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut outbox = Outbox::open(&path).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        outbox.retract(&[(1000, 2000)]).unwrap();
        let formed = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(formed.retractions, vec![(1000, 2000)]);
        // Queued after the batch was formed: not added to it.
        outbox.retract(&[(3000, 4000)]).unwrap();
        assert_eq!(outbox.next_batch(10).unwrap().unwrap(), formed);
        drop(outbox);
        let mut outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.next_batch(10).unwrap().unwrap(), formed);
        // The gateway holds later batches: formed again, with both.
        assert!(outbox.align(7, None).unwrap());
        let again = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(again.seq, 8);
        assert_eq!(again.retractions, vec![(1000, 2000), (3000, 4000)]);
        // Another device: formed again from 1.
        assert!(!outbox.bind_device("a").unwrap());
        assert!(outbox.bind_device("b").unwrap());
        let rebound = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(rebound.seq, 1);
        assert_eq!((rebound.spans.len(), rebound.retractions.len()), (1, 2));
    }
}
