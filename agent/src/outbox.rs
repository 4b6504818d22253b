//! The local outbox: every closed span is committed to a SQLite file before
//! anything is uploaded. Spans are grouped into batches, each with a stable
//! batch id and the next per-device sequence number, and deleted only when
//! the gateway acknowledged their batch. A batch, once formed, is sent again
//! as it is (same id, same sequence, same spans) until it is acknowledged,
//! so a crash at any point neither loses a span nor counts one twice.
//!
//! Time the employee deleted after it became spans waits here too, as
//! retractions, and travels in the span batches: never before the spans it
//! withdraws (they are in the same batch or an earlier one). Time deleted
//! before its spans reached the outbox (the agent's own capture keeps the
//! open span in memory) may wait as a withdrawal: each commit of spans turns
//! the part of it they reach into a retraction (see [`Later::Wait`]), until
//! the agent's next run forgets it (see [`Outbox::forget_withdrawals`]).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// The batch held more than one span or retraction: they wait again,
    /// to be sent one per batch, so one bad span or retraction does not
    /// take good ones with it.
    Split {
        /// Spans released.
        spans: usize,
        /// Retractions released.
        retractions: usize,
    },
    /// The batch held one span: it was set aside (kept in the outbox's
    /// `set_aside` table with the reason, never sent again).
    SetAside {
        /// The span.
        span: Event,
    },
    /// The batch held one retraction alone: it was dropped (a retraction
    /// is never sent again once the gateway refused it on its own).
    Dropped {
        /// Retractions dropped (one).
        retractions: usize,
    },
    /// The batch held retractions only and the gateway refused it without
    /// reading them (see [`Outbox::refuse_unread`]): they wait again.
    Unread {
        /// Retractions released.
        retractions: usize,
    },
}

/// What [`Outbox::retract`] does with the part of deleted time after the
/// high-water mark, which no span in the outbox or acknowledged covers yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Later {
    /// Drops it: no span will ever be made of the deleted events
    /// (ActivityWatch's watchers: events not combined yet never are).
    Drop,
    /// Keeps it, cut at the wall clock's now (never the future), as a
    /// withdrawal: spans still on their way to the outbox may cover it (the
    /// agent's own capture keeps the open span, and spans the disk could
    /// not take, in memory). Each commit of spans turns the part of it up
    /// to the new high-water mark into a retraction; the agent's next run
    /// forgets what still waits ([`Outbox::forget_withdrawals`]).
    Wait,
}

/// What [`Outbox::retract`] queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retracted {
    /// Retractions queued to be sent.
    pub queued: usize,
    /// Withdrawals kept until spans reach them ([`Later::Wait`]).
    pub kept: usize,
}

/// The outbox in one SQLite file.
pub struct Outbox {
    db: Connection,
}

/// The schema version this agent writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

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

/// Version 4: a retraction released from a refused batch is sent alone
/// (`solo`); time deleted before spans reached it waits for them
/// (withdrawals, see [`Later::Wait`]).
const SCHEMA_V4: &str = "
    ALTER TABLE retractions ADD COLUMN solo INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE withdrawals (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        start_ms  INTEGER NOT NULL,
        end_ms    INTEGER NOT NULL
    );
";

fn wall_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

/// Queues the retraction of `[start, end)`.
fn insert_retraction(db: &Connection, start: i64, end: i64) -> Result<(), OutboxError> {
    db.prepare_cached("INSERT INTO retractions (start_ms, end_ms) VALUES (?1, ?2)")?
        .execute(params![start, end])?;
    Ok(())
}

/// After spans were committed in `tx`: the part of each withdrawal up to
/// the high-water mark becomes a retraction (queued after those spans, in
/// the withdrawals' order), the rest waits on; a withdrawal wholly reached
/// is gone.
fn settle_withdrawals(tx: &rusqlite::Transaction<'_>) -> Result<(), OutboxError> {
    let Some(high) = high_water(tx)? else {
        return Ok(());
    };
    let reached = {
        let mut stmt = tx.prepare_cached(
            "SELECT start_ms, min(end_ms, ?1) FROM withdrawals WHERE start_ms < ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![high], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<Vec<(i64, i64)>, _>>()?
    };
    for (start, end) in reached {
        insert_retraction(tx, start, end)?;
    }
    tx.prepare_cached("DELETE FROM withdrawals WHERE end_ms <= ?1")?
        .execute(params![high])?;
    tx.prepare_cached("UPDATE withdrawals SET start_ms = ?1 WHERE start_ms < ?1")?
        .execute(params![high])?;
    Ok(())
}

/// A condition on `retractions`: those that may travel in a new batch, the
/// ones waiting outside a batch that no span left waiting outside a batch
/// starts before the end of (so the spans they withdraw are in this batch
/// or an earlier one). Its parameter `?1` must be `i64::MAX`, the bound
/// when no span waits.
const MAY_TRAVEL: &str = "batch_seq IS NULL AND end_ms <= coalesce( \
     (SELECT min(start_ms) FROM spans WHERE batch_seq IS NULL), ?1)";

/// What a new batch takes of what waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The oldest waiting span alone: it was released from a refused batch
    /// (no retraction joins it: a bad retraction must not get a good span
    /// set aside).
    SoloSpan,
    /// The oldest retraction released from a refused batch that may
    /// travel, alone.
    SoloRetraction,
    /// Up to `max_spans` waiting spans and, when `retractions`, up to as
    /// many retractions not released from a refused batch that may travel
    /// (at least one of them).
    Shared {
        /// Whether retractions join it.
        retractions: bool,
    },
}

/// What a new batch takes (see [`Shape`]); retractions only when
/// `retractions` (the gateway records them). None when nothing waits that
/// may be sent.
fn new_batch_shape(
    tx: &rusqlite::Transaction<'_>,
    retractions: bool,
) -> Result<Option<Shape>, OutboxError> {
    let oldest: Option<bool> = tx
        .query_row(
            "SELECT solo FROM spans WHERE batch_seq IS NULL ORDER BY start_ms, id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if oldest == Some(true) {
        return Ok(Some(Shape::SoloSpan));
    }
    let travels = |solo: bool| -> Result<bool, OutboxError> {
        Ok(tx
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM retractions WHERE solo = ?2 AND {MAY_TRAVEL})"
            ))?
            .query_row(params![i64::MAX, solo], |r| r.get(0))?)
    };
    if retractions && travels(true)? {
        return Ok(Some(Shape::SoloRetraction));
    }
    if oldest.is_some() {
        return Ok(Some(Shape::Shared { retractions }));
    }
    Ok((retractions && travels(false)?).then_some(Shape::Shared { retractions: true }))
}

/// Batch `seq` was acknowledged: its spans and the retractions still in it
/// leave the outbox, and the spans' end is remembered as the device's
/// high-water mark.
fn acknowledged(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<(), OutboxError> {
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
    Ok(())
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
/// Forgets formed batch `seq`, which the gateway refused: its sequence
/// number is free again (the gateway did not use it up).
fn free_batch(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<(), OutboxError> {
    tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
    tx.execute(
        "UPDATE device SET last_seq = ?1 WHERE last_seq = ?2",
        params![seq as i64 - 1, seq as i64],
    )?;
    Ok(())
}

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
/// [`Outbox::next_batch_with`]); None when nothing waits that may be sent.
fn form_batch(
    tx: &rusqlite::Transaction<'_>,
    max_spans: usize,
    retractions: bool,
) -> Result<Option<(u64, String)>, OutboxError> {
    let Some(shape) = new_batch_shape(tx, retractions)? else {
        return Ok(None);
    };
    let max = max_spans.max(1) as i64;
    let (spans, retractions) = match shape {
        Shape::SoloSpan => (1, None),
        Shape::SoloRetraction => (0, Some((true, 1))),
        Shape::Shared { retractions } => (max, retractions.then_some((false, max))),
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
        params![seq, spans],
    )?;
    if let Some((solo, limit)) = retractions {
        // After the spans joined: only retractions that may travel now.
        tx.execute(
            &format!(
                "UPDATE retractions SET batch_seq = ?2 WHERE id IN ( \
                   SELECT id FROM retractions WHERE solo = ?3 AND {MAY_TRAVEL} \
                   ORDER BY id LIMIT ?4)"
            ),
            params![i64::MAX, seq, solo, limit],
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
        }
        if version < 4 {
            tx.execute_batch(SCHEMA_V4)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// Commits a closed span, and settles the withdrawals it reaches (see
    /// [`Outbox::push_all`]).
    pub fn push(&mut self, span: &Event) -> Result<(), OutboxError> {
        self.push_all(std::slice::from_ref(span))
    }

    /// Commits `spans` (in order) in one transaction: all or none. In the
    /// same transaction, the part of each withdrawal (see [`Later::Wait`])
    /// up to the new high-water mark becomes a retraction, queued after
    /// the spans.
    pub fn push_all(&mut self, spans: &[Event]) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        for span in spans {
            insert_span(&tx, span)?;
        }
        settle_withdrawals(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Commits `spans` (in order) as [`Outbox::push_all`] does and, in the
    /// same transaction, notes that the ActivityWatch timelines were
    /// combined up to `until_ms`: a crash cannot commit one without the
    /// other.
    pub fn push_combined(&mut self, spans: &[Event], until_ms: i64) -> Result<(), OutboxError> {
        let tx = self.db.transaction()?;
        for span in spans {
            insert_span(&tx, span)?;
        }
        settle_withdrawals(&tx)?;
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
    /// epoch), time the employee deleted, in one transaction. The part of
    /// each up to the high-water mark (what spans in the outbox or
    /// acknowledged may cover) is queued as a retraction; the part after
    /// it is dropped or kept as a withdrawal, as `later` says. Empty parts
    /// are dropped.
    pub fn retract(
        &mut self,
        ranges: &[(i64, i64)],
        later: Later,
    ) -> Result<Retracted, OutboxError> {
        self.retract_at(ranges, later, wall_now_ms())
    }

    /// [`Outbox::retract`] with the wall clock at `now_ms`.
    fn retract_at(
        &mut self,
        ranges: &[(i64, i64)],
        later: Later,
        now_ms: i64,
    ) -> Result<Retracted, OutboxError> {
        let tx = self.db.transaction()?;
        let high = high_water(&tx)?;
        let mut retracted = Retracted::default();
        for &(start, end) in ranges {
            let sent_end = high.map_or(start, |high| end.min(high));
            if start < sent_end {
                insert_retraction(&tx, start, sent_end)?;
                retracted.queued += 1;
            }
            // Only the part kept to wait for spans is cut at now: spans
            // cover the part before the high-water mark already, also when
            // the clock went back behind it.
            let later_start = high.map_or(start, |high| start.max(high));
            let later_end = end.min(now_ms);
            if later == Later::Wait && later_start < later_end {
                tx.prepare_cached("INSERT INTO withdrawals (start_ms, end_ms) VALUES (?1, ?2)")?
                    .execute(params![later_start, later_end])?;
                retracted.kept += 1;
            }
        }
        tx.commit()?;
        Ok(retracted)
    }

    /// The batch to upload next to a gateway that records retractions:
    /// [`Outbox::next_batch_with`] with them.
    pub fn next_batch(&mut self, max_spans: usize) -> Result<Option<Batch>, OutboxError> {
        self.next_batch_with(max_spans, true)
    }

    /// The batch to upload next: the oldest one formed and not yet
    /// acknowledged (as it was formed), or else a new one of what waits:
    /// the oldest waiting span alone, when it was released from a refused
    /// batch; or else, with `retractions`, a retraction released from a
    /// refused batch alone; or else up to `max_spans` waiting spans and,
    /// with `retractions`, up to `max_spans` waiting retractions. A
    /// retraction joins a batch only once no span waiting outside a batch
    /// starts before its end (so it never travels before the spans it
    /// withdraws). Without `retractions` (the gateway would not record
    /// them), they wait. None when nothing waits that may be sent.
    pub fn next_batch_with(
        &mut self,
        max_spans: usize,
        retractions: bool,
    ) -> Result<Option<Batch>, OutboxError> {
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
            None => match form_batch(&tx, max_spans, retractions)? {
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
        acknowledged(&tx, seq)?;
        tx.commit()?;
        Ok(())
    }

    /// The gateway acknowledged batch `seq` without reading its
    /// retractions (an older gateway ignores them): its spans leave the
    /// outbox as with [`Outbox::acknowledge`], its retractions wait again,
    /// to be sent to a gateway that records them. Returns how many
    /// retractions wait again.
    pub fn acknowledge_spans(&mut self, seq: u64) -> Result<usize, OutboxError> {
        let tx = self.db.transaction()?;
        let released = tx.execute(
            "UPDATE retractions SET batch_seq = NULL WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        acknowledged(&tx, seq)?;
        tx.commit()?;
        Ok(released)
    }

    /// Forgets the withdrawals (see [`Later::Wait`]): for a new run of the
    /// agent, since the spans they wait for were in the memory of the run
    /// that kept them (a crash loses those spans; a clean stop commits
    /// them, which settles the withdrawals they reach). Kept, a withdrawal
    /// would withdraw spans recorded later, which the employee never
    /// deleted. Returns how many were forgotten.
    pub fn forget_withdrawals(&mut self) -> Result<usize, OutboxError> {
        Ok(self.db.execute("DELETE FROM withdrawals", [])?)
    }

    /// The gateway refused batch `seq` for good (bad spans or
    /// retractions, or too many for it); its sequence number is free again
    /// (the gateway did not use it up). A batch of one retraction alone is
    /// dropped. A batch of one span alone is set aside with `reason`, kept
    /// for the user to see. Any other batch is split: its spans and
    /// retractions are sent again one per batch.
    pub fn refuse(&mut self, seq: u64, reason: &str) -> Result<Refused, OutboxError> {
        let tx = self.db.transaction()?;
        let spans = batch_spans(&tx, seq)?;
        let retractions = batch_retractions(&tx, seq)?;
        let refused = match (spans.as_slice(), retractions.len()) {
            ([], 1) => {
                tx.execute(
                    "DELETE FROM retractions WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                Refused::Dropped { retractions: 1 }
            }
            ([span], 0) => {
                set_aside(&tx, seq, reason)?;
                Refused::SetAside { span: span.clone() }
            }
            (spans, retractions) => {
                tx.execute(
                    "UPDATE spans SET batch_seq = NULL, solo = 1 WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                tx.execute(
                    "UPDATE retractions SET batch_seq = NULL, solo = 1 WHERE batch_seq = ?1",
                    params![seq as i64],
                )?;
                Refused::Split {
                    spans: spans.len(),
                    retractions,
                }
            }
        };
        free_batch(&tx, seq)?;
        tx.commit()?;
        Ok(refused)
    }

    /// The gateway refused batch `seq`, of retractions only, without naming
    /// them (an older gateway, which reads no retractions, finds the batch
    /// empty): they wait again, to be sent to a gateway that records them,
    /// and the sequence number is free again.
    pub fn refuse_unread(&mut self, seq: u64) -> Result<Refused, OutboxError> {
        let tx = self.db.transaction()?;
        let released = tx.execute(
            "UPDATE retractions SET batch_seq = NULL WHERE batch_seq = ?1",
            params![seq as i64],
        )?;
        free_batch(&tx, seq)?;
        tx.commit()?;
        Ok(Refused::Unread {
            retractions: released,
        })
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

    /// Spans waiting (in a batch or not); retractions and withdrawals are
    /// not counted.
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
        assert_eq!(outbox.retract(&[(0, 1000)], Later::Drop).unwrap().queued, 1);
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
        assert_eq!(outbox.retract(&[(0, 1000)], Later::Drop).unwrap().queued, 1);
    }

    #[test]
    fn an_outbox_of_schema_3_is_upgraded_and_keeps_its_retractions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            // Version 3 as the first agent with retractions made it: a
            // batch formed with a span and a retraction, and a retraction
            // waiting.
            let db = Connection::open(&path).unwrap();
            db.execute_batch(SCHEMA).unwrap();
            db.execute_batch(SCHEMA_V2).unwrap();
            db.execute_batch(
                "CREATE TABLE retractions ( \
                     id        INTEGER PRIMARY KEY AUTOINCREMENT, \
                     start_ms  INTEGER NOT NULL, \
                     end_ms    INTEGER NOT NULL, \
                     batch_seq INTEGER \
                 ); \
                 CREATE INDEX retractions_by_batch ON retractions (batch_seq, id);",
            )
            .unwrap();
            db.pragma_update(None, "user_version", 3).unwrap();
            insert_span(&db, &span(0, "code")).unwrap();
            db.execute_batch(
                "INSERT INTO batches (seq, batch_id) VALUES (1, 'b1'); \
                 UPDATE spans SET batch_seq = 1; UPDATE device SET last_seq = 1; \
                 INSERT INTO retractions (start_ms, end_ms, batch_seq) VALUES (0, 1000, 1); \
                 INSERT INTO retractions (start_ms, end_ms) VALUES (2000, 3000);",
            )
            .unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        let version: i64 = outbox
            .db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(
            (batch.batch_id.as_str(), batch.seq, batch.spans.len()),
            ("b1", 1, 1)
        );
        assert_eq!(batch.retractions, vec![(0, 1000)]);
        outbox.acknowledge(batch.seq).unwrap();
        // Deleted time waits for spans, as with a new outbox.
        let retracted = outbox
            .retract_at(&[(4000, 8000)], Later::Wait, 10_000)
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 1, kept: 1 });
        let next = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(next.seq, 2);
        assert_eq!(next.retractions, vec![(2000, 3000), (4000, 5000)]);
        assert_eq!(
            outbox.refuse(next.seq, "bad").unwrap(),
            Refused::Split {
                spans: 0,
                retractions: 2
            }
        );
        assert_eq!(
            outbox.next_batch(10).unwrap().unwrap().retractions,
            vec![(2000, 3000)]
        );
    }

    #[test]
    fn retractions_are_cut_at_the_high_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        // No span ever recorded: nothing to withdraw.
        assert_eq!(
            outbox.retract(&[(0, 10_000)], Later::Drop).unwrap().queued,
            0
        );
        assert_eq!(outbox.next_batch(10).unwrap(), None);
        outbox.push(&span(0, "code")).unwrap();
        outbox.push(&span(10, "code")).unwrap();
        // Cut at 15 s (the last span's end); wholly after it, or empty:
        // dropped.
        let queued = outbox
            .retract(
                &[(1000, 20_000), (15_000, 30_000), (3000, 3000)],
                Later::Drop,
            )
            .unwrap()
            .queued;
        assert_eq!(queued, 1);
        assert_eq!(retractions(&outbox), vec![(1000, 15_000, None)]);
        // Acknowledged spans count too.
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.retractions, vec![(1000, 15_000)]);
        outbox.acknowledge(batch.seq).unwrap();
        assert_eq!(
            outbox
                .retract(&[(12_000, 40_000)], Later::Drop)
                .unwrap()
                .queued,
            1
        );
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
        outbox.retract(&[(0, 12_000)], Later::Drop).unwrap();
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
        outbox
            .retract(&[(0, 2000), (3000, 4000)], Later::Drop)
            .unwrap();
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
        outbox.retract(&[(0, 1000)], Later::Drop).unwrap();
        // One span with retractions: which is bad is unknown, so neither is
        // set aside; the span goes alone, the retraction after it.
        let both = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((both.spans.len(), both.retractions.len()), (1, 1));
        assert_eq!(
            outbox.refuse(both.seq, "bad").unwrap(),
            Refused::Split {
                spans: 1,
                retractions: 1
            }
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
        outbox.retract(&[(1000, 2000)], Later::Drop).unwrap();
        let formed = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(formed.retractions, vec![(1000, 2000)]);
        // Queued after the batch was formed: not added to it.
        outbox.retract(&[(3000, 4000)], Later::Drop).unwrap();
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

    /// The withdrawals waiting for spans: (start, end).
    fn withdrawals(outbox: &Outbox) -> Vec<(i64, i64)> {
        let mut stmt = outbox
            .db
            .prepare("SELECT start_ms, end_ms FROM withdrawals ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn deleted_time_no_span_reached_yet_waits_for_the_spans_that_cover_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        // No span yet (the first one is still open): all of it waits, cut
        // at the wall clock's now (10 s); wholly in the future: nothing.
        let retracted = outbox
            .retract_at(
                &[(1000, 3000), (9000, i64::MAX), (20_000, 30_000)],
                Later::Wait,
                10_000,
            )
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 0, kept: 2 });
        assert!(retractions(&outbox).is_empty());
        assert_eq!(withdrawals(&outbox), vec![(1000, 3000), (9000, 10_000)]);
        // The spans 0-5 s are committed: the first is reached whole and
        // becomes a retraction, queued after the span.
        outbox.push(&span(0, "code")).unwrap();
        assert_eq!(retractions(&outbox), vec![(1000, 3000, None)]);
        assert_eq!(withdrawals(&outbox), vec![(9000, 10_000)]);
        // Before the high-water mark (5 s) a retraction, after it a
        // withdrawal.
        let retracted = outbox
            .retract_at(&[(4000, 8000)], Later::Wait, 10_000)
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 1, kept: 1 });
        assert_eq!(withdrawals(&outbox), vec![(9000, 10_000), (5000, 8000)]);
        // Spans up to 9.5 s (in one transaction): the second is reached
        // whole, the first in part.
        let mut long = span(5, "code");
        long.duration_ms = 4500;
        outbox.push_all(&[long]).unwrap();
        assert_eq!(
            retractions(&outbox),
            vec![
                (1000, 3000, None),
                (4000, 5000, None),
                (9000, 9500, None),
                (5000, 8000, None)
            ]
        );
        assert_eq!(withdrawals(&outbox), vec![(9500, 10_000)]);
        // The batch carries the spans and, after them, their retractions.
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.spans.len(), 2);
        assert_eq!(
            batch.retractions,
            vec![(1000, 3000), (4000, 5000), (9000, 9500), (5000, 8000)]
        );
        outbox.acknowledge(batch.seq).unwrap();
        // Combined spans settle it too; reached whole, it is gone.
        let mut last = span(9, "code");
        last.start_ms = 9500;
        outbox.push_combined(&[last], 15_000).unwrap();
        assert!(withdrawals(&outbox).is_empty());
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.spans.len(), 1);
        assert_eq!(batch.retractions, vec![(9500, 10_000)]);
    }

    #[test]
    fn deleted_time_spans_reached_is_queued_when_the_clock_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(10, "code")).unwrap();
        // The clock went back to 5 s, before the deleted time: what the
        // span 10-15 s covers is queued all the same; nothing waits (the
        // rest would be in the future).
        let retracted = outbox
            .retract_at(&[(11_000, 14_000), (13_000, 20_000)], Later::Wait, 5000)
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 2, kept: 0 });
        assert_eq!(
            retractions(&outbox),
            vec![(11_000, 14_000, None), (13_000, 15_000, None)]
        );
        assert!(withdrawals(&outbox).is_empty());
    }

    #[test]
    fn withdrawals_are_forgotten_with_the_run_that_held_their_spans() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let retracted = outbox
            .retract_at(&[(3000, 8000), (9000, 9500)], Later::Wait, 10_000)
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 1, kept: 2 });
        assert_eq!(outbox.forget_withdrawals().unwrap(), 2);
        // Spans of the next run, over the same time, are not withdrawn.
        outbox.push(&span(5, "code")).unwrap();
        assert!(withdrawals(&outbox).is_empty());
        assert_eq!(retractions(&outbox), vec![(3000, 5000, None)]);
        assert_eq!(outbox.forget_withdrawals().unwrap(), 0);
    }

    #[test]
    fn retractions_a_gateway_did_not_read_wait_again_and_its_spans_leave() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        outbox
            .retract(&[(1000, 2000), (3000, 4000)], Later::Drop)
            .unwrap();
        let batch = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((batch.spans.len(), batch.retractions.len()), (1, 2));
        assert_eq!(outbox.acknowledge_spans(batch.seq).unwrap(), 2);
        assert_eq!(outbox.waiting().unwrap(), 0);
        assert_eq!(outbox.high_water().unwrap(), Some(5000));
        assert_eq!(
            retractions(&outbox),
            vec![(1000, 2000, None), (3000, 4000, None)]
        );
        // Not to a gateway that would not record them; then in the next
        // batch, in their order.
        assert_eq!(outbox.next_batch_with(10, false).unwrap(), None);
        let again = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(again.seq, batch.seq + 1);
        assert!(again.spans.is_empty());
        assert_eq!(again.retractions, vec![(1000, 2000), (3000, 4000)]);
        outbox.acknowledge(again.seq).unwrap();
        assert!(retractions(&outbox).is_empty());
    }

    #[test]
    fn deleted_time_no_span_reached_is_dropped_when_no_span_will() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let dropped = outbox
            .retract_at(&[(1000, 3000)], Later::Drop, 10_000)
            .unwrap();
        assert_eq!(dropped, Retracted::default());
        outbox.push(&span(0, "code")).unwrap();
        // Not cut at the wall clock: only at the high-water mark (5 s).
        let retracted = outbox
            .retract_at(&[(4000, 20_000)], Later::Drop, 1000)
            .unwrap();
        assert_eq!(retracted, Retracted { queued: 1, kept: 0 });
        outbox.push(&span(10, "code")).unwrap();
        assert!(withdrawals(&outbox).is_empty());
        assert_eq!(retractions(&outbox), vec![(4000, 5000, None)]);
    }

    #[test]
    fn retractions_wait_for_a_gateway_that_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        outbox
            .retract(&[(1000, 2000), (3000, 4000)], Later::Drop)
            .unwrap();
        // An older gateway: spans only.
        let spans = outbox.next_batch_with(10, false).unwrap().unwrap();
        assert_eq!((spans.spans.len(), spans.retractions.len()), (1, 0));
        outbox.acknowledge(spans.seq).unwrap();
        assert_eq!(outbox.next_batch_with(10, false).unwrap(), None);
        assert_eq!(
            retractions(&outbox),
            vec![(1000, 2000, None), (3000, 4000, None)]
        );
        // Upgraded: sent; a batch formed with them stays as formed.
        let formed = outbox.next_batch_with(10, true).unwrap().unwrap();
        assert_eq!(formed.retractions, vec![(1000, 2000), (3000, 4000)]);
        assert_eq!(outbox.next_batch_with(10, false).unwrap().unwrap(), formed);
        // Released from a refused batch, they wait for it too.
        outbox.refuse(formed.seq, "bad").unwrap();
        outbox.push(&span(10, "code")).unwrap();
        let spans = outbox.next_batch_with(10, false).unwrap().unwrap();
        assert_eq!((spans.spans.len(), spans.retractions.len()), (1, 0));
        outbox.acknowledge(spans.seq).unwrap();
        assert_eq!(outbox.next_batch_with(10, false).unwrap(), None);
        assert_eq!(retractions(&outbox).len(), 2);
    }

    #[test]
    fn a_refused_batch_of_retractions_is_sent_one_per_batch_and_a_lone_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.push(&span(0, "code")).unwrap();
        let spans = outbox.next_batch(10).unwrap().unwrap();
        outbox.acknowledge(spans.seq).unwrap();
        outbox
            .retract(&[(0, 1000), (1000, 2000), (2000, 3000)], Later::Drop)
            .unwrap();
        // Refused (one is bad, or a gateway takes fewer at once): none is
        // dropped, each goes alone.
        let three = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(three.retractions.len(), 3);
        assert_eq!(
            outbox.refuse(three.seq, "too large").unwrap(),
            Refused::Split {
                spans: 0,
                retractions: 3
            }
        );
        // Spans and retractions queued since do not join them.
        outbox.push(&span(10, "code")).unwrap();
        outbox.retract(&[(12_000, 13_000)], Later::Drop).unwrap();
        let first = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(first.seq, three.seq);
        assert_eq!((first.spans.len(), first.retractions), (0, vec![(0, 1000)]));
        outbox.acknowledge(first.seq).unwrap();
        let bad = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!((bad.spans.len(), bad.retractions), (0, vec![(1000, 2000)]));
        // Refused alone: dropped.
        assert_eq!(
            outbox.refuse(bad.seq, "bad").unwrap(),
            Refused::Dropped { retractions: 1 }
        );
        let third = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(third.seq, bad.seq);
        assert_eq!(
            (third.spans.len(), third.retractions),
            (0, vec![(2000, 3000)])
        );
        outbox.acknowledge(third.seq).unwrap();
        let rest = outbox.next_batch(10).unwrap().unwrap();
        assert_eq!(
            (rest.spans.len(), rest.retractions),
            (1, vec![(12_000, 13_000)])
        );
        outbox.acknowledge(rest.seq).unwrap();
        assert!(retractions(&outbox).is_empty());
        assert_eq!(outbox.next_batch(10).unwrap(), None);
    }
}
