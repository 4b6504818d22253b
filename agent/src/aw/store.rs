//! ActivityWatch's data model kept on the machine: buckets (one timeline
//! each: a window watcher's, an AFK watcher's, ...) and their events, in a
//! SQLite file beside the outbox. Heartbeats merge as ActivityWatch's server
//! merges them (aw-transform `heartbeat`): into the bucket's last event when
//! the data is identical and the heartbeat starts no earlier than that event
//! and no later than its end plus the pulsetime.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What can go wrong with the local ActivityWatch store.
#[derive(Debug, thiserror::Error)]
pub enum AwError {
    /// The bucket does not exist.
    #[error("there's no bucket named {0}")]
    NoSuchBucket(String),
    /// SQLite failed.
    #[error("activitywatch store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer agent.
    #[error(
        "the activitywatch store was written by a newer agent (schema {found}); upgrade the agent"
    )]
    NewerSchema {
        /// Its schema version.
        found: i64,
    },
    /// Stored JSON did not parse (the file was changed by someone else).
    #[error("activitywatch store: corrupt JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// What the store holds cannot be read back.
    #[error("activitywatch store: {0}")]
    Corrupt(String),
    /// Its file cannot be created or made private.
    #[error("activitywatch store file: {0}")]
    File(#[from] std::io::Error),
    /// The deleted time could not be queued for withdrawal from what was
    /// uploaded: nothing was deleted.
    #[error("cannot withdraw the deleted time from the uploads, nothing was deleted: {0}")]
    Retract(String),
}

/// A bucket as a watcher creates it (`POST /api/0/buckets/<id>`).
#[derive(Debug, Clone, Deserialize)]
pub struct NewBucket {
    /// The watcher's name, e.g. `aw-watcher-window`.
    pub client: String,
    /// The bucket type, e.g. `currentwindow` or `afkstatus`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The machine's host name.
    pub hostname: String,
    /// A display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
}

/// A stored bucket, as ActivityWatch's server returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Its id.
    pub id: String,
    /// A display name.
    pub name: Option<String>,
    /// The bucket type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The watcher that created it.
    pub client: String,
    /// The machine's host name.
    pub hostname: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Free-form metadata.
    pub data: Map<String, Value>,
}

/// An event: a stretch of time with free-form data. Its duration is in
/// seconds, as on ActivityWatch's wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwEvent {
    /// Set by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Start (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// Length in seconds (0 for a heartbeat).
    #[serde(default)]
    pub duration: f64,
    /// What it is about (window: `app`, `title`; AFK: `status`).
    pub data: Map<String, Value>,
}

impl AwEvent {
    fn start_us(&self) -> i64 {
        self.timestamp.timestamp_micros()
    }

    fn duration_us(&self) -> i64 {
        (self.duration * 1e6).round() as i64
    }

    fn end_us(&self) -> i64 {
        self.start_us().saturating_add(self.duration_us())
    }

    /// Whether the duration is a number of seconds the store can keep:
    /// finite, not negative, under a century.
    pub fn duration_ok(&self) -> bool {
        self.duration.is_finite() && (0.0..MAX_DURATION_S).contains(&self.duration)
    }
}

/// The longest event duration accepted, in seconds (a century).
pub const MAX_DURATION_S: f64 = 100.0 * 365.25 * 86_400.0;

/// ActivityWatch's heartbeat merge: `last` extended by `heartbeat`, or
/// None when the heartbeat starts a new event.
pub fn heartbeat_merge(last: &AwEvent, heartbeat: &AwEvent, pulsetime_s: f64) -> Option<AwEvent> {
    if last.data != heartbeat.data {
        return None;
    }
    let end = crate::heartbeat::merged_end(
        (last.start_us(), last.end_us()),
        (heartbeat.start_us(), heartbeat.end_us()),
        (pulsetime_s * 1e6).round() as i64,
    )?;
    Some(AwEvent {
        id: last.id,
        timestamp: last.timestamp,
        duration: (end - last.start_us()) as f64 / 1e6,
        data: last.data.clone(),
    })
}

/// Whether a bucket was made or was there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// New.
    Created,
    /// It existed (ActivityWatch answers 304).
    Exists,
}

/// The buckets the agent's own capture reports to, as ActivityWatch's
/// window and AFK watchers would.
#[derive(Debug, Clone)]
pub struct OwnBuckets {
    /// `aw-watcher-window_<host>` (type `currentwindow`).
    pub window: String,
    /// `aw-watcher-afk_<host>` (type `afkstatus`).
    pub afk: String,
}

/// Where the device's spans come from: deleting an event they were made of
/// withdraws them (see [`AwStore::on_retract`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanSource {
    /// The agent's own capture: the buckets it writes (client
    /// [`OWN_CLIENT`]).
    Own,
    /// ActivityWatch's watchers (`--source activitywatch`): every window
    /// (`currentwindow`) and AFK (`afkstatus`) bucket, as they are combined.
    Watchers,
}

impl SpanSource {
    /// Whether spans are made of a bucket of type `kind` that `client`
    /// writes.
    fn feeds(self, kind: &str, client: &str) -> bool {
        match self {
            Self::Own => client == OWN_CLIENT,
            Self::Watchers => matches!(kind, "currentwindow" | "afkstatus"),
        }
    }
}

/// Told the time (start, end in ms since the epoch) of deleted events the
/// device's spans were made of, before the delete commits; an error
/// cancels the delete.
pub type RetractHook = Box<dyn FnMut(&[(i64, i64)]) -> Result<(), String> + Send>;

/// The local ActivityWatch store.
pub struct AwStore {
    pub(super) db: Connection,
    /// Tracking is paused by the user: what watchers report is answered
    /// as usual but not kept (so it is neither synced nor combined, and
    /// does not show in the employee's day).
    paused: bool,
    /// When the pause in force or the last one began and (None: still
    /// paused) ended, µs since the epoch: heartbeats arriving after it are
    /// clipped so they do not cover it.
    last_pause: Option<(i64, Option<i64>)>,
    /// Where the device's spans come from.
    span_source: SpanSource,
    /// Told the time of deleted events spans were made of (None: deletes
    /// withdraw nothing).
    on_retract: Option<RetractHook>,
}

const SCHEMA_VERSION: i64 = 2;

/// Client name of the buckets the agent's own capture writes (their
/// content reaches the platform as spans, so they are not synced raw).
pub const OWN_CLIENT: &str = "trackhrs-agent";

const SCHEMA: &str = "
    CREATE TABLE buckets (
        id       TEXT PRIMARY KEY,
        name     TEXT,
        type     TEXT NOT NULL,
        client   TEXT NOT NULL,
        hostname TEXT NOT NULL,
        created  INTEGER NOT NULL,
        data     TEXT NOT NULL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        bucket   TEXT NOT NULL REFERENCES buckets (id) ON DELETE CASCADE,
        start_us INTEGER NOT NULL,
        end_us   INTEGER NOT NULL,
        data     TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (bucket, start_us);
";

/// Version 2: changes are tracked for the platform's copy of the raw
/// timelines. Event ids are never reused (AUTOINCREMENT: a synced event's
/// key must not name another event after it is deleted); each event has a
/// version bumped by every change, the wall time of its last change and the
/// version queued for upload; a bucket remembers whether any of its events
/// was. Changes wait in `queue` (encoded `TimelineChange`s, in order); the
/// batch being uploaded is `batch`; refused changes are kept in
/// `set_aside`. `sync` holds the store's random id (part of every event's
/// key), the device its batches were numbered for and the last acknowledged
/// sequence.
const SCHEMA_V2: &str = "
    CREATE TABLE events_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket     TEXT NOT NULL REFERENCES buckets (id) ON DELETE CASCADE,
        start_us   INTEGER NOT NULL,
        end_us     INTEGER NOT NULL,
        data       TEXT NOT NULL,
        version    INTEGER NOT NULL DEFAULT 1,
        changed_us INTEGER NOT NULL DEFAULT 0,
        synced     INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO events_v2 (id, bucket, start_us, end_us, data)
        SELECT id, bucket, start_us, end_us, data FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_by_time ON events (bucket, start_us);
    CREATE INDEX events_unsynced ON events (changed_us) WHERE synced < version;
    ALTER TABLE buckets ADD COLUMN synced INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE sync (
        one       INTEGER PRIMARY KEY CHECK (one = 1),
        store_id  TEXT NOT NULL,
        device_id TEXT,
        last_seq  INTEGER NOT NULL DEFAULT 0,
        solo_until INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE queue (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        change BLOB NOT NULL
    );
    CREATE TABLE batch (
        one      INTEGER PRIMARY KEY CHECK (one = 1),
        seq      INTEGER NOT NULL,
        batch_id TEXT NOT NULL,
        last_id  INTEGER NOT NULL
    );
    CREATE TABLE set_aside (
        id         INTEGER PRIMARY KEY,
        change     BLOB NOT NULL,
        reason     TEXT NOT NULL,
        refused_at INTEGER NOT NULL
    );
";

/// Now, µs since the Unix epoch, by the wall clock.
pub(super) fn wall_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// `[start_us, end_us)` in whole ms, rounded outwards (covering every span
/// made of it); None when empty.
fn ms_range(start_us: i64, end_us: i64) -> Option<(i64, i64)> {
    let ceil = |us: i64| us.div_euclid(1000) + i64::from(us.rem_euclid(1000) > 0);
    (end_us > start_us).then(|| (start_us.div_euclid(1000), ceil(end_us)))
}

/// `ranges`, in start order, merged where they touch or overlap.
fn merged(ranges: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Tells `hook` the time of the events of bucket `id` (`event`: of that
/// one only) about to be deleted in `tx`, when the device's spans are made
/// of that bucket under `source`. Its error cancels the delete.
fn retract_deleted(
    tx: &Transaction<'_>,
    hook: Option<&mut RetractHook>,
    source: SpanSource,
    id: &str,
    event: Option<i64>,
) -> Result<(), AwError> {
    let Some(hook) = hook else {
        return Ok(());
    };
    let feeds = tx
        .prepare_cached("SELECT type, client FROM buckets WHERE id = ?1")?
        .query_row(params![id], |r| {
            Ok(source.feeds(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?))
        })
        .optional()?;
    if feeds != Some(true) {
        return Ok(());
    }
    let times = tx
        .prepare_cached(
            "SELECT start_us, end_us FROM events WHERE bucket = ?1 AND (?2 IS NULL OR id = ?2) \
             ORDER BY start_us, id",
        )?
        .query_map(params![id, event], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(i64, i64)>, _>>()?;
    let ranges = merged(times.into_iter().filter_map(|(s, e)| ms_range(s, e)));
    if ranges.is_empty() {
        return Ok(());
    }
    hook(&ranges).map_err(AwError::Retract)
}

fn to_event((id, start_us, end_us, data): (i64, i64, i64, String)) -> Result<AwEvent, AwError> {
    Ok(AwEvent {
        id: Some(id),
        timestamp: DateTime::from_timestamp_micros(start_us).unwrap_or_default(),
        duration: (end_us - start_us) as f64 / 1e6,
        data: serde_json::from_str(&data)?,
    })
}

impl AwStore {
    /// Opens (creating, its owner's only) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, AwError> {
        crate::private::file(path)?;
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", true)?;
        let tx = db.transaction()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(AwError::NewerSchema { found: version });
        }
        if version == 0 {
            tx.execute_batch(SCHEMA)?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_V2)?;
            tx.execute(
                "INSERT INTO sync (one, store_id) VALUES (1, ?1)",
                params![uuid::Uuid::new_v4().simple().to_string()],
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(Self {
            db,
            paused: false,
            last_pause: None,
            span_source: SpanSource::Own,
            on_retract: None,
        })
    }

    /// Sets where the device's spans come from (the agent's own capture
    /// until told otherwise).
    pub fn set_span_source(&mut self, source: SpanSource) {
        self.span_source = source;
    }

    /// Sets the hook told the time of deleted events the device's spans
    /// were made of, so those spans are withdrawn (see [`RetractHook`]).
    pub fn on_retract(&mut self, hook: RetractHook) {
        self.on_retract = Some(hook);
    }

    /// Pauses (true) or resumes keeping what watchers report.
    pub fn set_paused(&mut self, paused: bool) {
        self.set_paused_at(paused, wall_now_us());
    }

    fn set_paused_at(&mut self, paused: bool, now_us: i64) {
        match (self.paused, paused) {
            (false, true) => self.last_pause = Some((now_us, None)),
            (true, false) => {
                self.last_pause = self.last_pause.map(|(from, _)| (from, Some(now_us)));
            }
            _ => {}
        }
        self.paused = paused;
    }

    /// `heartbeat` without the time of the last pause (a watcher reports
    /// its last input, from before the pause, with a growing duration), or
    /// None when it lies within the pause; and the pause's end, before
    /// which no event may be extended past it.
    fn outside_pause(&self, heartbeat: &AwEvent) -> (Option<AwEvent>, Option<i64>) {
        let Some((from, Some(to))) = self.last_pause else {
            return (Some(heartbeat.clone()), None);
        };
        let (start, end) = (heartbeat.start_us(), heartbeat.end_us());
        if end <= from || start >= to {
            return (Some(heartbeat.clone()), Some(to));
        }
        if end <= to {
            return (None, Some(to));
        }
        let clipped = AwEvent {
            timestamp: DateTime::from_timestamp_micros(to).unwrap_or_default(),
            duration: (end - to) as f64 / 1e6,
            ..heartbeat.clone()
        };
        (Some(clipped), Some(to))
    }

    fn exists(&self, id: &str) -> Result<(), AwError> {
        self.db
            .prepare_cached("SELECT 1 FROM buckets WHERE id = ?1")?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .ok_or_else(|| AwError::NoSuchBucket(id.to_owned()))
    }

    /// Creates bucket `id`, unless it exists. A watcher creating a bucket
    /// the agent's own capture made before under the same name (it names
    /// its buckets as ActivityWatch's watchers do) takes it over: its
    /// events from then on are the watcher's, and synced raw.
    pub fn create_bucket(&mut self, id: &str, new: &NewBucket) -> Result<Created, AwError> {
        let data = serde_json::to_string(&new.data.clone().unwrap_or_default())?;
        if new.client != OWN_CLIENT {
            self.db.execute(
                "UPDATE buckets SET name = ?2, type = ?3, client = ?4, hostname = ?5, data = ?6 \
                 WHERE id = ?1 AND client = ?7",
                params![
                    id,
                    new.name,
                    new.kind,
                    new.client,
                    new.hostname,
                    data,
                    OWN_CLIENT
                ],
            )?;
        }
        let inserted = self.db.execute(
            "INSERT INTO buckets (id, name, type, client, hostname, created, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            params![
                id,
                new.name,
                new.kind,
                new.client,
                new.hostname,
                wall_now_us(),
                data
            ],
        )?;
        Ok(if inserted == 1 {
            Created::Created
        } else {
            Created::Exists
        })
    }

    /// The buckets of the agent's own capture on `hostname`, created when
    /// missing.
    pub fn own_buckets(&mut self, hostname: &str) -> Result<OwnBuckets, AwError> {
        let own = OwnBuckets {
            window: format!("aw-watcher-window_{hostname}"),
            afk: format!("aw-watcher-afk_{hostname}"),
        };
        for (id, kind) in [(&own.window, "currentwindow"), (&own.afk, "afkstatus")] {
            let new = NewBucket {
                client: OWN_CLIENT.into(),
                kind: kind.into(),
                hostname: hostname.into(),
                name: None,
                data: None,
            };
            self.create_bucket(id, &new)?;
        }
        Ok(own)
    }

    /// Deletes every event that ended before `before` and whose last
    /// change is queued for the platform (the agent's own capture is never
    /// synced raw: it reaches the platform as spans). The store keeps recent
    /// activity; the platform keeps history. Returns how many. Forgetting is
    /// not deleting: nothing is retracted.
    pub fn forget_before(&mut self, before: DateTime<Utc>) -> Result<usize, AwError> {
        Ok(self.db.execute(
            "DELETE FROM events WHERE end_us < ?1 AND (synced >= version OR bucket IN \
             (SELECT id FROM buckets WHERE client = ?2))",
            params![before.timestamp_micros(), OWN_CLIENT],
        )?)
    }

    /// Every bucket.
    pub fn buckets(&self) -> Result<Vec<Bucket>, AwError> {
        let mut stmt = self.db.prepare(
            "SELECT id, name, type, client, hostname, created, data FROM buckets ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        rows.map(|row| {
            let (id, name, kind, client, hostname, created, data) = row?;
            Ok(Bucket {
                id,
                name,
                kind,
                client,
                hostname,
                created: DateTime::from_timestamp_micros(created).unwrap_or_default(),
                data: serde_json::from_str(&data)?,
            })
        })
        .collect()
    }

    /// Bucket `id`.
    pub fn bucket(&self, id: &str) -> Result<Bucket, AwError> {
        self.buckets()?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| AwError::NoSuchBucket(id.to_owned()))
    }

    /// Deletes bucket `id` and its events; when any of them was queued for
    /// the platform, the bucket's retraction is queued. When the device's
    /// spans are made of the bucket, its events' time is first told to the
    /// retraction hook (merged where it touches); if that fails, nothing is
    /// deleted.
    pub fn delete_bucket(&mut self, id: &str) -> Result<(), AwError> {
        let tx = self.db.transaction()?;
        let synced: Option<bool> = tx
            .query_row(
                "SELECT synced FROM buckets WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(synced) = synced else {
            return Err(AwError::NoSuchBucket(id.to_owned()));
        };
        if synced {
            super::timeline::queue_retraction(&tx, id, None)?;
        }
        retract_deleted(&tx, self.on_retract.as_mut(), self.span_source, id, None)?;
        tx.execute("DELETE FROM buckets WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts `events` into bucket `id`; returns them with their ids. An
    /// event carrying the id of an event of this bucket replaces it, as in
    /// ActivityWatch; any other id is ignored.
    pub fn insert(&mut self, id: &str, events: &[AwEvent]) -> Result<Vec<AwEvent>, AwError> {
        self.exists(id)?;
        if self.paused {
            return Ok(events.to_vec());
        }
        let tx = self.db.transaction()?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let data = serde_json::to_string(&e.data)?;
            let replaced = match e.id {
                Some(event) => {
                    tx.prepare_cached(
                        "UPDATE events SET start_us = ?3, end_us = ?4, data = ?5, \
                         version = version + 1, changed_us = ?6 WHERE bucket = ?1 AND id = ?2",
                    )?
                    .execute(params![
                        id,
                        event,
                        e.start_us(),
                        e.end_us(),
                        data,
                        wall_now_us()
                    ])? == 1
                }
                None => false,
            };
            let event = if replaced {
                e.id
            } else {
                tx.prepare_cached(
                    "INSERT INTO events (bucket, start_us, end_us, data, changed_us) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    id,
                    e.start_us(),
                    e.end_us(),
                    data,
                    wall_now_us()
                ])?;
                Some(tx.last_insert_rowid())
            };
            out.push(AwEvent {
                id: event,
                ..e.clone()
            });
        }
        tx.commit()?;
        Ok(out)
    }

    /// Events of bucket `id` that overlap `[start, end)`, clipped to it,
    /// newest first, at most `limit`.
    pub fn events(
        &self,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        limit: Option<u64>,
    ) -> Result<Vec<AwEvent>, AwError> {
        self.exists(id)?;
        let from = start.map_or(i64::MIN, |t| t.timestamp_micros());
        let to = end.map_or(i64::MAX, |t| t.timestamp_micros());
        let limit = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        let mut stmt = self.db.prepare_cached(
            "SELECT id, start_us, end_us, data FROM events \
             WHERE bucket = ?1 AND end_us >= ?2 AND start_us <= ?3 \
             ORDER BY start_us DESC, id DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![id, from, to, limit], event_row)?;
        rows.map(|row| {
            let (eid, s, e, data) = row?;
            to_event((eid, s.max(from), e.min(to), data))
        })
        .collect()
    }

    /// Event `event` of bucket `id`, if any.
    pub fn event(&self, id: &str, event: i64) -> Result<Option<AwEvent>, AwError> {
        self.exists(id)?;
        self.db
            .prepare_cached(
                "SELECT id, start_us, end_us, data FROM events WHERE bucket = ?1 AND id = ?2",
            )?
            .query_row(params![id, event], event_row)
            .optional()?
            .map(to_event)
            .transpose()
    }

    /// How many events of bucket `id` overlap `[start, end)`.
    pub fn count(
        &self,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<u64, AwError> {
        self.exists(id)?;
        let from = start.map_or(i64::MIN, |t| t.timestamp_micros());
        let to = end.map_or(i64::MAX, |t| t.timestamp_micros());
        Ok(self.db.query_row(
            "SELECT count(*) FROM events WHERE bucket = ?1 AND end_us >= ?2 AND start_us <= ?3",
            params![id, from, to],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Deletes event `event` of bucket `id` (nothing when it is not there);
    /// when a version of it was queued for the platform, its retraction is
    /// queued. When the device's spans are made of the bucket, the event's
    /// time is first told to the retraction hook; if that fails, nothing is
    /// deleted.
    pub fn delete_event(&mut self, id: &str, event: i64) -> Result<(), AwError> {
        self.exists(id)?;
        let tx = self.db.transaction()?;
        let synced: Option<bool> = tx
            .query_row(
                "SELECT e.synced > 0 AND b.client != ?3 FROM events e \
                 JOIN buckets b ON b.id = e.bucket WHERE e.bucket = ?1 AND e.id = ?2",
                params![id, event, OWN_CLIENT],
                |r| r.get(0),
            )
            .optional()?;
        if synced == Some(true) {
            super::timeline::queue_retraction(&tx, id, Some(event))?;
        }
        retract_deleted(
            &tx,
            self.on_retract.as_mut(),
            self.span_source,
            id,
            Some(event),
        )?;
        tx.execute(
            "DELETE FROM events WHERE bucket = ?1 AND id = ?2",
            params![id, event],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A heartbeat into bucket `id`: merged into its last event or stored
    /// as a new one. Returns the event as it now stands.
    pub fn heartbeat(
        &mut self,
        id: &str,
        heartbeat: &AwEvent,
        pulsetime_s: f64,
    ) -> Result<AwEvent, AwError> {
        self.exists(id)?;
        if self.paused {
            return Ok(heartbeat.clone());
        }
        let (kept, resumed) = self.outside_pause(heartbeat);
        // Within the pause: answered, not kept.
        let Some(kept) = kept else {
            return Ok(heartbeat.clone());
        };
        let heartbeat = &kept;
        let tx = self.db.transaction()?;
        let last = tx
            .prepare_cached(
                "SELECT id, start_us, end_us, data FROM events WHERE bucket = ?1 \
                 ORDER BY start_us DESC, id DESC LIMIT 1",
            )?
            .query_row(params![id], event_row)
            .optional()?
            .map(to_event)
            .transpose()?;
        // An event that ended before the last pause ended is not extended
        // over it.
        let merged = last
            .filter(|l| resumed.is_none_or(|to| l.end_us() >= to || heartbeat.start_us() < to))
            .and_then(|l| heartbeat_merge(&l, heartbeat, pulsetime_s));
        let stored = match merged {
            Some(m) => {
                tx.execute(
                    "UPDATE events SET end_us = ?2, version = version + 1, changed_us = ?3 \
                     WHERE id = ?1",
                    params![m.id, m.end_us(), wall_now_us()],
                )?;
                m
            }
            None => {
                tx.execute(
                    "INSERT INTO events (bucket, start_us, end_us, data, changed_us) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        heartbeat.start_us(),
                        heartbeat.end_us(),
                        serde_json::to_string(&heartbeat.data)?,
                        wall_now_us()
                    ],
                )?;
                AwEvent {
                    id: Some(tx.last_insert_rowid()),
                    ..heartbeat.clone()
                }
            }
        };
        tx.commit()?;
        Ok(stored)
    }
}

/// An event at `at_s` seconds after the epoch, for tests.
#[cfg(test)]
pub(crate) fn ev(at_s: i64, duration: f64, data: Value) -> AwEvent {
    AwEvent {
        id: None,
        timestamp: DateTime::from_timestamp(at_s, 0).unwrap(),
        duration,
        data: data.as_object().unwrap().clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;

    fn bucket(store: &mut AwStore, id: &str) {
        let new: NewBucket = serde_json::from_value(
            json!({"client": "aw-watcher-window", "type": "currentwindow", "hostname": "laptop"}),
        )
        .unwrap();
        assert_eq!(store.create_bucket(id, &new).unwrap(), Created::Created);
        assert_eq!(store.create_bucket(id, &new).unwrap(), Created::Exists);
    }

    #[test]
    fn nothing_of_a_pause_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        bucket(&mut store, "afk");
        let active = json!({"status": "not-afk"});
        let s = |at: i64| at * 1_000_000;
        let before = store
            .heartbeat("afk", &ev(0, 0.0, active.clone()), 30.0)
            .unwrap();
        store.set_paused_at(true, s(10));
        store
            .heartbeat("afk", &ev(12, 0.0, active.clone()), 30.0)
            .unwrap();
        store.set_paused_at(false, s(20));
        // Within the pause: not kept.
        store
            .heartbeat("afk", &ev(5, 10.0, active.clone()), 30.0)
            .unwrap();
        assert_eq!(store.count("afk", None, None).unwrap(), 1);
        // Reaching past it: kept from the resume on, as a new event (the one
        // from before the pause is not extended over it).
        let after = store
            .heartbeat("afk", &ev(5, 20.0, active.clone()), 30.0)
            .unwrap();
        assert_ne!(after.id, before.id);
        assert_eq!((after.timestamp.timestamp(), after.duration), (20, 5.0));
        let kept: Vec<_> = store
            .events("afk", None, None, None)
            .unwrap()
            .into_iter()
            .map(|e| (e.timestamp.timestamp(), e.duration))
            .collect();
        assert_eq!(kept, vec![(20, 5.0), (0, 0.0)]);
    }

    #[test]
    fn a_watcher_takes_over_a_bucket_of_the_agents_own_capture() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        let own = store.own_buckets("laptop").unwrap();
        let new: NewBucket = serde_json::from_value(
            json!({"client": "aw-watcher-window", "type": "currentwindow", "hostname": "laptop"}),
        )
        .unwrap();
        assert_eq!(
            store.create_bucket(&own.window, &new).unwrap(),
            Created::Exists
        );
        assert_eq!(
            store.bucket(&own.window).unwrap().client,
            "aw-watcher-window"
        );
        assert_eq!(store.bucket(&own.afk).unwrap().client, OWN_CLIENT);
    }

    #[test]
    fn heartbeats_merge_as_activitywatch_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        bucket(&mut store, "w");
        let code = json!({"app": "code", "title": "main.rs"});
        let a = store
            .heartbeat("w", &ev(0, 0.0, code.clone()), 2.0)
            .unwrap();
        let b = store
            .heartbeat("w", &ev(1, 0.0, code.clone()), 2.0)
            .unwrap();
        assert_eq!((b.id, b.duration), (a.id, 1.0));
        // Within end + pulsetime: still the same event.
        let c = store
            .heartbeat("w", &ev(3, 0.0, code.clone()), 2.0)
            .unwrap();
        assert_eq!((c.id, c.duration), (a.id, 3.0));
        // Beyond it, or other data: a new event.
        let d = store
            .heartbeat("w", &ev(6, 0.0, code.clone()), 2.0)
            .unwrap();
        assert_ne!(d.id, a.id);
        let e = store
            .heartbeat(
                "w",
                &ev(7, 0.0, json!({"app": "firefox", "title": "x"})),
                2.0,
            )
            .unwrap();
        assert_ne!(e.id, d.id);
        assert_eq!(store.count("w", None, None).unwrap(), 3);
        let newest = store.events("w", None, None, Some(1)).unwrap();
        assert_eq!(newest[0].data["app"], "firefox");
        // A heartbeat with a duration extends to its own end.
        let f = store
            .heartbeat(
                "w",
                &ev(8, 4.5, json!({"app": "firefox", "title": "x"})),
                2.0,
            )
            .unwrap();
        assert_eq!((f.id, f.duration), (e.id, 5.5));
    }

    #[test]
    fn events_are_listed_newest_first_and_clipped_to_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        bucket(&mut store, "w");
        let inserted = store
            .insert(
                "w",
                &[ev(0, 10.0, json!({"n": 1})), ev(20, 10.0, json!({"n": 2}))],
            )
            .unwrap();
        let start = DateTime::from_timestamp(5, 0);
        let end = DateTime::from_timestamp(25, 0);
        let listed = store.events("w", start, end, None).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].data["n"], 2);
        assert_eq!(
            (listed[0].timestamp.timestamp(), listed[0].duration),
            (20, 5.0)
        );
        assert_eq!(
            (listed[1].timestamp.timestamp(), listed[1].duration),
            (5, 5.0)
        );
        let id = inserted[0].id.unwrap();
        assert_eq!(store.event("w", id).unwrap().unwrap().duration, 10.0);
        // Inserted again with its id: replaced, not added.
        let longer = AwEvent {
            duration: 12.0,
            ..inserted[0].clone()
        };
        assert_eq!(store.insert("w", &[longer]).unwrap()[0].id, Some(id));
        assert_eq!(store.event("w", id).unwrap().unwrap().duration, 12.0);
        assert_eq!(store.count("w", None, None).unwrap(), 2);
        store.delete_event("w", id).unwrap();
        assert_eq!(store.event("w", id).unwrap(), None);
        assert!(matches!(
            store.events("nope", None, None, None),
            Err(AwError::NoSuchBucket(_))
        ));
        // Only events that ended before the cut (and are queued for the
        // platform) are forgotten.
        store.queue_changes(i64::MAX, 100).unwrap();
        assert_eq!(
            store
                .forget_before(DateTime::from_timestamp(25, 0).unwrap())
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .forget_before(DateTime::from_timestamp(31, 0).unwrap())
                .unwrap(),
            1
        );
        assert_eq!(store.count("w", None, None).unwrap(), 0);
        let own = store.own_buckets("laptop").unwrap();
        assert_eq!(store.bucket(&own.afk).unwrap().kind, "afkstatus");
        store.delete_bucket("w").unwrap();
        assert_eq!(store.buckets().unwrap().len(), 2);
    }

    /// What a hook was told, call by call.
    type Told = Arc<Mutex<Vec<Vec<(i64, i64)>>>>;

    /// A hook that notes what it is told (failing with `fail`), and where.
    fn noting(fail: bool) -> (RetractHook, Told) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let hook = Box::new({
            let told = told.clone();
            move |ranges: &[(i64, i64)]| {
                told.lock().unwrap().push(ranges.to_vec());
                if fail {
                    Err("the outbox is full".to_owned())
                } else {
                    Ok(())
                }
            }
        });
        (hook, told)
    }

    #[test]
    fn deleting_what_the_watchers_spans_were_made_of_is_told_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        bucket(&mut store, "w");
        let editor: NewBucket = serde_json::from_value(
            json!({"client": "aw-watcher-vim", "type": "app.editor.activity", "hostname": "laptop"}),
        )
        .unwrap();
        store.create_bucket("e", &editor).unwrap();
        let w = store
            .insert(
                "w",
                &[
                    ev(0, 10.0, json!({"n": 1})),
                    ev(10, 5.0, json!({"n": 2})),
                    ev(30, 0.0015, json!({"n": 3})),
                    ev(40, 2.0, json!({"n": 4})),
                ],
            )
            .unwrap();
        let e = store.insert("e", &[ev(0, 5.0, json!({}))]).unwrap();
        // No hook: deleting tells no one.
        store.delete_event("w", w[3].id.unwrap()).unwrap();
        let (hook, told) = noting(false);
        store.set_span_source(SpanSource::Watchers);
        store.on_retract(hook);
        // Another watcher's bucket; an event replaced; an event not there.
        store.delete_event("e", e[0].id.unwrap()).unwrap();
        store.insert("w", &[w[0].clone()]).unwrap();
        store.delete_event("w", 999).unwrap();
        assert!(told.lock().unwrap().is_empty());
        // 1.5 ms from 30 s: rounded outwards.
        store.delete_event("w", w[2].id.unwrap()).unwrap();
        assert_eq!(told.lock().unwrap().pop(), Some(vec![(30_000, 30_002)]));
        store.delete_bucket("e").unwrap();
        assert!(told.lock().unwrap().is_empty());
        // A bucket: its events' time, merged where it touches.
        store.insert("w", &[ev(20, 1.0, json!({"n": 5}))]).unwrap();
        store.delete_bucket("w").unwrap();
        assert_eq!(
            told.lock().unwrap().pop(),
            Some(vec![(0, 15_000), (20_000, 21_000)])
        );
    }

    #[test]
    fn a_delete_the_hook_cannot_take_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AwStore::open(&dir.path().join("aw.db")).unwrap();
        let own = store.own_buckets("laptop").unwrap();
        bucket(&mut store, "w");
        let mine = store
            .insert(&own.window, &[ev(0, 10.0, json!({"app": "code"}))])
            .unwrap();
        let theirs = store.insert("w", &[ev(0, 10.0, json!({}))]).unwrap();
        let (hook, told) = noting(true);
        store.on_retract(hook);
        // The agent's own capture: a watcher's window bucket is not a span
        // source, the agent's own are.
        store.delete_event("w", theirs[0].id.unwrap()).unwrap();
        assert!(told.lock().unwrap().is_empty());
        let id = mine[0].id.unwrap();
        assert!(matches!(
            store.delete_event(&own.window, id),
            Err(AwError::Retract(_))
        ));
        assert!(store.event(&own.window, id).unwrap().is_some());
        assert!(matches!(
            store.delete_bucket(&own.window),
            Err(AwError::Retract(_))
        ));
        assert_eq!(store.count(&own.window, None, None).unwrap(), 1);
        assert_eq!(told.lock().unwrap().len(), 2);
    }
}
