//! The catalog: the runtime's own PostgreSQL schema (`trackhrs_catalog`),
//! holding one row per projection version (state, checkpoint, counters), and
//! the operations on versions: register, promote, drop, status, and waiting
//! for a position (read-your-writes).
//!
//! The live pointer is the row whose state is `live`; a partial unique index
//! allows one per name, and [`promote`] moves it in one transaction.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};
use trackhrs_nats::EventStore;

use crate::error::ProjectionError;
use crate::invalidation;
use crate::projection::{Projection, consumer_name, schema_name, validate, validate_name};

/// Schema of the runtime's own tables.
pub const CATALOG_SCHEMA: &str = "trackhrs_catalog";

/// First key of every advisory lock the runtime takes (`trkh`), so they do
/// not collide with other users of advisory locks in the same database.
const LOCK_CLASS_MIGRATE: i32 = 0x7472_6b00;
/// Advisory lock class serialising register, promote and drop per name.
const LOCK_CLASS_NAME: i32 = 0x7472_6b01;
/// Advisory lock class held by the one runner of a projection version.
pub(crate) const LOCK_CLASS_RUNNER: i32 = 0x7472_6b02;

/// The catalog's migrations, in order. Never edit one that has shipped:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE trackhrs_catalog.projection_versions (
    name            text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    version         bigint      NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    schema_name     text        NOT NULL UNIQUE,
    subjects        text[]      NOT NULL,
    state           text        NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    position        bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    events_applied  bigint      NOT NULL DEFAULT 0,
    commits_applied bigint      NOT NULL DEFAULT 0,
    dead_letters    bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX projection_versions_one_live
    ON trackhrs_catalog.projection_versions (name) WHERE state = 'live';
CREATE TABLE trackhrs_catalog.replayed_dead_letters (
    name            text        NOT NULL,
    version         bigint      NOT NULL,
    stream_sequence bigint      NOT NULL,
    replayed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version, stream_sequence),
    FOREIGN KEY (name, version)
        REFERENCES trackhrs_catalog.projection_versions (name, version) ON DELETE CASCADE
);
"#,
    r#"
ALTER TABLE trackhrs_catalog.projection_versions ADD COLUMN code_version bigint;
"#,
];

/// Lifecycle of a projection version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Catching up beside the live version; not queried.
    Building,
    /// The version queries read (one per name).
    Live,
    /// Replaced by a newer live version; its runner stops, its schema waits
    /// for [`drop_version`].
    Retired,
}

impl VersionState {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Live => "live",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, ProjectionError> {
        match s {
            "building" => Ok(Self::Building),
            "live" => Ok(Self::Live),
            "retired" => Ok(Self::Retired),
            other => Err(ProjectionError::Catalog(format!("unknown state {other:?}"))),
        }
    }
}

/// One projection version as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Projection name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Its PostgreSQL schema.
    pub schema: String,
    /// Its subject filters.
    pub subjects: Vec<String>,
    /// Building, live or retired.
    pub state: VersionState,
    /// Checkpoint: every commit of its subjects up to this stream sequence is
    /// applied (or dead-lettered), and nothing after it.
    pub position: u64,
    /// Events applied (commits hold one or more events).
    pub events_applied: u64,
    /// Commits applied.
    pub commits_applied: u64,
    /// Messages sent to the dead-letter stream (replays subtract).
    pub dead_letters: u64,
    /// Last change, microseconds since the Unix epoch.
    pub updated_at_micros: i64,
    /// The [`Projection::code_version`] of the code that registered it;
    /// `None` for versions registered before the catalog recorded it.
    pub code_version: Option<u64>,
}

/// A version with where it stands against the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    /// The catalog row.
    pub info: VersionInfo,
    /// Last sequence of the events stream when the status was taken.
    pub stream_last_sequence: u64,
    /// `stream_last_sequence - position`: stream sequences not yet passed
    /// (for a filtered projection, including messages it does not read).
    pub lag: u64,
    /// Messages of its subjects not yet applied, from its consumer
    /// (`num_pending + num_ack_pending`); `None` when the consumer does not
    /// exist (the runner has not started since the last reset).
    pub pending_messages: Option<u64>,
}

/// What [`promote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// The version that was live before (now retired), if any.
    pub previous: Option<u32>,
    /// The new live version's checkpoint.
    pub position: u64,
}

/// The result of [`wait_for_position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The live version's checkpoint reached this position (at least the one asked for).
    Reached(u64),
    /// The timeout passed; the live version's last checkpoint seen, or `None`
    /// when no version is live.
    TimedOut(Option<u64>),
}

/// Creates or upgrades the catalog schema. Idempotent, and safe when several
/// processes start at once: the migrations run under a transaction-scoped
/// advisory lock. A catalog already up to date is left alone without any
/// DDL, so a role that may not create schemas (the gateway's) gets through.
pub async fn migrate(pg: &mut Client) -> Result<(), ProjectionError> {
    let tx = pg.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, 0)",
        &[&LOCK_CLASS_MIGRATE],
    )
    .await?;
    let exists: bool = tx
        .query_one(
            &format!("SELECT to_regclass('{CATALOG_SCHEMA}.schema_migrations') IS NOT NULL"),
            &[],
        )
        .await?
        .get(0);
    if exists {
        let applied: i32 = tx
            .query_one(
                &format!(
                    "SELECT coalesce(max(version), 0) FROM {CATALOG_SCHEMA}.schema_migrations"
                ),
                &[],
            )
            .await?
            .get(0);
        if applied as usize >= MIGRATIONS.len() {
            tx.commit().await?;
            return Ok(());
        }
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {CATALOG_SCHEMA};
         CREATE TABLE IF NOT EXISTS {CATALOG_SCHEMA}.schema_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let applied: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {CATALOG_SCHEMA}.schema_migrations"),
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= applied {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            &format!("INSERT INTO {CATALOG_SCHEMA}.schema_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await?;
        tracing::info!(version, "applied projection catalog migration");
    }
    tx.commit().await?;
    Ok(())
}

const SELECT_COLUMNS: &str = "name, version, schema_name, subjects, state, position, \
     events_applied, commits_applied, dead_letters, \
     (extract(epoch FROM updated_at) * 1000000)::bigint, code_version";

fn row_to_info(row: &tokio_postgres::Row) -> Result<VersionInfo, ProjectionError> {
    let version: i64 = row.get(1);
    Ok(VersionInfo {
        name: row.get(0),
        version: u32::try_from(version)
            .map_err(|_| ProjectionError::Catalog(format!("version {version} out of range")))?,
        schema: row.get(2),
        subjects: row.get(3),
        state: VersionState::parse(row.get(4))?,
        position: to_u64(row.get(5)),
        events_applied: to_u64(row.get(6)),
        commits_applied: to_u64(row.get(7)),
        dead_letters: to_u64(row.get(8)),
        updated_at_micros: row.get(9),
        code_version: row.get::<_, Option<i64>>(10).map(to_u64),
    })
}

/// PostgreSQL has no unsigned integers; counters and sequences are never negative.
fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Stream sequences and counters as PostgreSQL `bigint` (they stay far below 2^63).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Registers a projection version, or finds it registered: in one
/// transaction, creates its catalog row, its schema and its tables
/// ([`Projection::migrate`]). A version registered when no version of the
/// name is live becomes live at once (there is nothing better to serve);
/// otherwise it starts as `building`. Refuses a registered version whose
/// subject filters changed (that needs a new version), unless the code only
/// added subjects on which `events` holds nothing up to the version's
/// position (a new kind of event, such as erasures): it would have read
/// nothing else, so it reads the added subjects from there on.
pub async fn register<P: Projection>(
    pg: &mut Client,
    projection: &P,
    events: &jetstream::stream::Stream,
) -> Result<VersionInfo, ProjectionError> {
    validate(projection)?;
    let (name, version) = (projection.name(), projection.version());
    let subjects = projection.subjects();
    let tx = pg.transaction().await?;
    lock_name(&tx, name).await?;
    if let Some(existing) = select_version(&tx, name, version, false).await? {
        if existing.subjects != subjects {
            let added = added_subjects_unseen(&existing, &subjects, events).await?;
            let Some(added) = added else {
                return Err(ProjectionError::Invalid(format!(
                    "projection {name} version {version} was registered with subjects {:?}, now {subjects:?}; bump the version",
                    existing.subjects
                )));
            };
            tx.execute(
                &format!(
                    "UPDATE {CATALOG_SCHEMA}.projection_versions SET subjects = $3 \
                     WHERE name = $1 AND version = $2"
                ),
                &[&name, &i64::from(version), &subjects],
            )
            .await?;
            tracing::info!(
                projection = name,
                version,
                added = ?added,
                "the code reads new subjects with no events before this version's position; reading them from here on"
            );
            tx.commit().await?;
            return Ok(VersionInfo {
                subjects,
                ..existing
            });
        }
        tx.commit().await?;
        return Ok(existing);
    }
    let schema = schema_name(name, version);
    let any_live = tx
        .query_opt(
            &format!(
                "SELECT 1 FROM {CATALOG_SCHEMA}.projection_versions WHERE name = $1 AND state = 'live'"
            ),
            &[&name],
        )
        .await?
        .is_some();
    let state = if any_live {
        VersionState::Building
    } else {
        VersionState::Live
    };
    // A schema left behind by a crash between a drop's commit and the end of
    // the drop cannot exist (the drop is one transaction), so this creates it.
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await?;
    projection
        .migrate(&tx, &schema)
        .await
        .map_err(|source| ProjectionError::Migrate {
            schema: schema.clone(),
            source,
        })?;
    tx.execute(
        &format!(
            "INSERT INTO {CATALOG_SCHEMA}.projection_versions
                 (name, version, schema_name, subjects, state, promoted_at, code_version)
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 = 'live' THEN now() END, $6)"
        ),
        &[
            &name,
            &i64::from(version),
            &schema,
            &subjects,
            &state.as_str(),
            &to_i64(projection.code_version()),
        ],
    )
    .await?;
    let info = select_version(&tx, name, version, false)
        .await?
        .ok_or_else(|| ProjectionError::Catalog(format!("{schema} vanished while registering")))?;
    tx.commit().await?;
    tracing::info!(
        projection = name,
        version,
        state = state.as_str(),
        "registered projection version"
    );
    Ok(info)
}

async fn lock_name(tx: &Transaction<'_>, name: &str) -> Result<(), ProjectionError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS_NAME, &name],
    )
    .await?;
    Ok(())
}

/// Reads one version's row, locking it for the rest of the transaction when
/// `for_update` (what the runner does before moving the checkpoint).
pub(crate) async fn select_version(
    tx: &Transaction<'_>,
    name: &str,
    version: u32,
    for_update: bool,
) -> Result<Option<VersionInfo>, ProjectionError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row = tx
        .query_opt(
            &format!(
                "SELECT {SELECT_COLUMNS} FROM {CATALOG_SCHEMA}.projection_versions
                 WHERE name = $1 AND version = $2{lock}"
            ),
            &[&name, &i64::from(version)],
        )
        .await?;
    row.as_ref().map(row_to_info).transpose()
}

/// Every registered version of `name`, oldest first (the catalog alone; see
/// [`status`] for where each stands against the log).
pub async fn versions_of(pg: &Client, name: &str) -> Result<Vec<VersionInfo>, ProjectionError> {
    pg.query(
        &format!(
            "SELECT {SELECT_COLUMNS} FROM {CATALOG_SCHEMA}.projection_versions
             WHERE name = $1 ORDER BY version"
        ),
        &[&name],
    )
    .await?
    .iter()
    .map(row_to_info)
    .collect()
}

/// Records the code version of a version registered before the catalog
/// recorded code versions (its `code_version` is NULL); a recorded one stays.
pub async fn set_code_version(
    pg: &mut Client,
    name: &str,
    version: u32,
    code_version: u64,
) -> Result<(), ProjectionError> {
    pg.execute(
        &format!(
            "UPDATE {CATALOG_SCHEMA}.projection_versions SET code_version = $3
             WHERE name = $1 AND version = $2 AND code_version IS NULL"
        ),
        &[&name, &i64::from(version), &to_i64(code_version)],
    )
    .await?;
    Ok(())
}

/// Reads one version's row outside a transaction.
pub async fn version_info(
    pg: &Client,
    name: &str,
    version: u32,
) -> Result<Option<VersionInfo>, ProjectionError> {
    let row = pg
        .query_opt(
            &format!(
                "SELECT {SELECT_COLUMNS} FROM {CATALOG_SCHEMA}.projection_versions
                 WHERE name = $1 AND version = $2"
            ),
            &[&name, &i64::from(version)],
        )
        .await?;
    row.as_ref().map(row_to_info).transpose()
}

/// Moves a version's checkpoint and counters, inside the transaction that
/// applied the batch.
pub(crate) async fn advance(
    tx: &Transaction<'_>,
    name: &str,
    version: u32,
    position: u64,
    commits: u64,
    events: u64,
    dead_letters: u64,
) -> Result<(), ProjectionError> {
    tx.execute(
        &format!(
            "UPDATE {CATALOG_SCHEMA}.projection_versions
             SET position = greatest(position, $3),
                 commits_applied = commits_applied + $4,
                 events_applied = events_applied + $5,
                 dead_letters = dead_letters + $6,
                 updated_at = now()
             WHERE name = $1 AND version = $2"
        ),
        &[
            &name,
            &i64::from(version),
            &to_i64(position),
            &to_i64(commits),
            &to_i64(events),
            &to_i64(dead_letters),
        ],
    )
    .await?;
    Ok(())
}

/// The schema of the live version of `name`, for queries; `None` when no
/// version is live.
pub async fn live_schema(pg: &Client, name: &str) -> Result<Option<String>, ProjectionError> {
    let row = pg
        .query_opt(
            &format!(
                "SELECT schema_name FROM {CATALOG_SCHEMA}.projection_versions
                 WHERE name = $1 AND state = 'live'"
            ),
            &[&name],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Makes `version` the live version of `name` in one transaction: the
/// previous live version becomes `retired` (its runner stops at its next
/// batch). Then publishes the projection-wide invalidation
/// ([`invalidation::promotion_subject`]) so caches drop what they read from
/// the old version. Promoting the live version changes nothing.
pub async fn promote(
    pg: &mut Client,
    nats: &async_nats::Client,
    name: &str,
    version: u32,
) -> Result<Promoted, ProjectionError> {
    validate_name(name)?;
    let tx = pg.transaction().await?;
    lock_name(&tx, name).await?;
    let target = select_version(&tx, name, version, true)
        .await?
        .ok_or_else(|| ProjectionError::UnknownVersion {
            name: name.to_owned(),
            version,
        })?;
    if target.state == VersionState::Live {
        tx.commit().await?;
        return Ok(Promoted {
            previous: None,
            position: target.position,
        });
    }
    let previous = tx
        .query_opt(
            &format!(
                "UPDATE {CATALOG_SCHEMA}.projection_versions
                 SET state = 'retired', updated_at = now()
                 WHERE name = $1 AND state = 'live' RETURNING version"
            ),
            &[&name],
        )
        .await?
        .map(|r| r.get::<_, i64>(0));
    tx.execute(
        &format!(
            "UPDATE {CATALOG_SCHEMA}.projection_versions
             SET state = 'live', promoted_at = now(), updated_at = now()
             WHERE name = $1 AND version = $2"
        ),
        &[&name, &i64::from(version)],
    )
    .await?;
    tx.commit().await?;
    let previous = previous.and_then(|v| u32::try_from(v).ok());
    tracing::info!(
        projection = name,
        version,
        ?previous,
        "promoted projection version"
    );
    invalidation::publish_promotion(nats, name, target.position).await;
    Ok(Promoted {
        previous,
        position: target.position,
    })
}

/// Drops a version that is not live: its catalog row and its schema in one
/// transaction, then its consumer and its dead letters. A runner still
/// running it stops at its next batch.
pub async fn drop_version(
    pg: &mut Client,
    store: &EventStore,
    name: &str,
    version: u32,
) -> Result<(), ProjectionError> {
    validate_name(name)?;
    let tx = pg.transaction().await?;
    lock_name(&tx, name).await?;
    let info = select_version(&tx, name, version, true).await?;
    if let Some(info) = &info {
        if info.state == VersionState::Live {
            return Err(ProjectionError::DropLive {
                name: name.to_owned(),
                version,
            });
        }
        tx.execute(
            &format!(
                "DELETE FROM {CATALOG_SCHEMA}.projection_versions WHERE name = $1 AND version = $2"
            ),
            &[&name, &i64::from(version)],
        )
        .await?;
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            schema_name(name, version)
        ))
        .await?;
    }
    tx.commit().await?;
    let js = jetstream::new(store.client().clone());
    let events = js
        .get_stream_no_info(&store.config().events_stream)
        .await
        .map_err(ProjectionError::nats)?;
    if let Err(e) = events.delete_consumer(&consumer_name(name, version)).await {
        let missing = matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref je)
            if je.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND);
        if !missing {
            return Err(ProjectionError::nats(e));
        }
    }
    crate::dlq::purge(&js, name, version).await?;
    tracing::info!(
        projection = name,
        version,
        existed = info.is_some(),
        "dropped projection version"
    );
    Ok(())
}

/// Every registered version with its checkpoint, the stream's last
/// sequence, the lag and the pending messages of its consumer.
pub async fn status(
    pg: &Client,
    store: &EventStore,
) -> Result<Vec<VersionStatus>, ProjectionError> {
    let rows = pg
        .query(
            &format!(
                "SELECT {SELECT_COLUMNS} FROM {CATALOG_SCHEMA}.projection_versions
                 ORDER BY name, version"
            ),
            &[],
        )
        .await?;
    let js = jetstream::new(store.client().clone());
    let mut events = js
        .get_stream(&store.config().events_stream)
        .await
        .map_err(ProjectionError::nats)?;
    let last = events
        .info()
        .await
        .map_err(ProjectionError::nats)?
        .state
        .last_sequence;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let info = row_to_info(row)?;
        let pending = events
            .consumer_info(consumer_name(&info.name, info.version))
            .await
            .ok()
            .map(|c| c.num_pending + c.num_ack_pending as u64);
        out.push(VersionStatus {
            lag: last.saturating_sub(info.position),
            stream_last_sequence: last,
            pending_messages: pending,
            info,
        });
    }
    Ok(out)
}

/// Read-your-writes: waits until the live version of `name` has passed
/// `position` (a stream sequence from an append's acknowledgement), or
/// `timeout` passes. Polls the catalog with a short backoff (2 ms doubling
/// to 50 ms); a catalog not created yet counts as "nothing live".
pub async fn wait_for_position(
    pg: &Client,
    name: &str,
    position: u64,
    timeout: Duration,
) -> Result<Waited, ProjectionError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let query = format!(
        "SELECT position FROM {CATALOG_SCHEMA}.projection_versions
         WHERE name = $1 AND state = 'live'"
    );
    loop {
        let seen = match pg.query_opt(&query, &[&name]).await {
            Ok(row) => row.map(|r| to_u64(r.get(0))),
            // No runner has created the catalog yet: nothing is live.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(p) = seen
            && p >= position
        {
            return Ok(Waited::Reached(p));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Waited::TimedOut(seen));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// True when a JetStream "delete message" failed only because the message
/// was already gone.
pub(crate) fn already_deleted(kind: &DeleteMessageErrorKind) -> bool {
    matches!(kind, DeleteMessageErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
            || e.error_code() == jetstream::ErrorCode::SEQUENCE_NOT_FOUND)
}

/// The subjects `subjects` adds to `existing`'s, when it only adds and the
/// stream holds no event on them at or before `existing`'s position;
/// `None` otherwise.
async fn added_subjects_unseen(
    existing: &VersionInfo,
    subjects: &[String],
    events: &jetstream::stream::Stream,
) -> Result<Option<Vec<String>>, ProjectionError> {
    if !existing.subjects.iter().all(|s| subjects.contains(s)) {
        return Ok(None);
    }
    let added: Vec<String> = subjects
        .iter()
        .filter(|s| !existing.subjects.contains(s))
        .cloned()
        .collect();
    for subject in &added {
        match events.direct_get_first_for_subject(subject.as_str()).await {
            Ok(first) if first.sequence <= existing.position => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => {}
            Err(e) => return Err(ProjectionError::nats(e)),
        }
    }
    Ok(Some(added))
}
