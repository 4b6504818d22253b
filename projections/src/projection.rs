//! The `Projection` trait and the names derived from a projection's name and
//! version (PostgreSQL schema, JetStream consumer).

use std::future::Future;

use tokio_postgres::Transaction;
use trackhrs_nats::{DecodedCommit, KeyStore, StoreError, TypedCommit};

use crate::error::{ApplyError, ProjectionError};

/// Longest projection name: `proj_<name>_v<u32>` must fit PostgreSQL's
/// 63-byte identifiers.
const MAX_NAME_LEN: usize = 40;

/// A read model: a name, a version, the subjects it reads and a handler that
/// applies a batch of commits to PostgreSQL.
///
/// Each (name, version) lives in its own PostgreSQL schema
/// ([`schema_name`]); a new version (new tables, new classifier, new rules)
/// is built beside the live one from the start of the log and then promoted.
pub trait Projection: Send + Sync + 'static {
    /// A stored commit as this projection reads it: usually
    /// [`DecodedCommit`] (JSON payloads, personal data opened), or a typed
    /// form for event types read so often that a JSON tree per event would
    /// cost most of the projection's time.
    type Commit: Committed;

    /// Decodes one stored message (`subject`, stream `sequence`, `bytes`).
    /// The runner decodes a batch on several tasks at once. A
    /// [`StoreError::Decode`] makes the message a dead letter; any other
    /// error is retried.
    fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Self::Commit, StoreError>> + Send;

    /// Identifier `[a-z][a-z0-9_]{0,39}`; used in schema, consumer, dead-letter
    /// and invalidation names.
    fn name(&self) -> &str;

    /// Version, 1 or more: the catalog's, given to the constructor (the
    /// supervisor registers the next one for a rebuild). To change tables or
    /// meaning, raise [`Projection::code_version`] instead.
    fn version(&self) -> u32;

    /// Which code builds this projection's rows. Raise it whenever this
    /// code would build other rows from the same events (a classifier
    /// upgrade, a fixed bug): the [`Supervisor`](crate::Supervisor) then
    /// builds the next version beside a live one built with a lower code
    /// version and switches to it when it has caught up. A live version
    /// built with a higher one (newer code in a rolling deploy) is served as
    /// it is.
    fn code_version(&self) -> u64 {
        1
    }

    /// Subject filters on the events stream, a few wildcards such as
    /// `evt.*.organization.*` (never one per aggregate). Changing them needs
    /// a new version.
    fn subjects(&self) -> Vec<String>;

    /// Creates the projection's tables inside `schema` (which exists). Runs
    /// once per version, in the transaction that registers the version.
    fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// Applies `batch` (commits in stream order, each with its stream
    /// sequence) to the tables in `schema`, inside `tx`, which the runner
    /// commits together with the checkpoint. Write the batch with a few
    /// multi-row statements (or binary COPY for big batches), not one
    /// statement per event.
    ///
    /// Return [`ApplyError::Poison`] for a commit this version cannot apply:
    /// the runner dead-letters it and applies the rest. Any other error rolls
    /// the whole batch back (see [`ApplyError`]).
    fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[Self::Commit],
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// What the runner needs to know of a decoded commit.
pub trait Committed: Send + Sync + 'static {
    /// Its stream sequence (the checkpoint it moves to).
    fn stream_sequence(&self) -> u64;
    /// Its organization (whose cached reads are invalidated).
    fn org_id(&self) -> &str;
    /// How many events it holds (for the catalog's counters).
    fn events(&self) -> usize;
}

impl Committed for DecodedCommit {
    fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    fn org_id(&self) -> &str {
        &self.org_id
    }

    fn events(&self) -> usize {
        self.events.len()
    }
}

impl<E: Send + Sync + 'static> Committed for TypedCommit<E> {
    fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    fn org_id(&self) -> &str {
        &self.org_id
    }

    fn events(&self) -> usize {
        self.events.len()
    }
}

/// Checks a projection name: `[a-z][a-z0-9_]{0,39}`.
pub fn validate_name(name: &str) -> Result<(), ProjectionError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::Invalid(format!(
            "projection name {name:?} must match [a-z][a-z0-9_]{{0,{}}}",
            MAX_NAME_LEN - 1
        )))
    }
}

/// Checks name, version and subjects of a projection.
pub(crate) fn validate<P: Projection>(projection: &P) -> Result<(), ProjectionError> {
    validate_name(projection.name())?;
    if projection.version() == 0 {
        return Err(ProjectionError::Invalid(format!(
            "projection {}: versions start at 1",
            projection.name()
        )));
    }
    let subjects = projection.subjects();
    if subjects.is_empty() || subjects.iter().any(|s| s.is_empty() || s.contains(' ')) {
        return Err(ProjectionError::Invalid(format!(
            "projection {}: needs one or more subject filters without spaces, got {subjects:?}",
            projection.name()
        )));
    }
    Ok(())
}

/// PostgreSQL schema of a projection version: `proj_<name>_v<version>`.
pub fn schema_name(name: &str, version: u32) -> String {
    format!("proj_{name}_v{version}")
}

/// Durable consumer of a projection version on the events stream (the same
/// string as its schema).
pub fn consumer_name(name: &str, version: u32) -> String {
    schema_name(name, version)
}

/// The schema version each of a projection's schemas was made by (its
/// `meta.schema_version`), read once per schema: the live version of an
/// older schema is applied to by newer code while its successor is built.
#[derive(Clone)]
pub(crate) struct SchemaVersions(moka::sync::Cache<String, u32>);

impl SchemaVersions {
    pub(crate) fn new() -> Self {
        Self(moka::sync::Cache::new(100))
    }

    /// The schema version `schema`'s tables were made by.
    pub(crate) async fn of(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<u32, tokio_postgres::Error> {
        if let Some(v) = self.0.get(schema) {
            return Ok(v);
        }
        let row = tx
            .query_one(&format!("SELECT schema_version FROM {schema}.meta"), &[])
            .await?;
        let v = row.get::<_, i32>(0) as u32;
        self.0.insert(schema.to_owned(), v);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("dashboard").is_ok());
        assert!(validate_name("time_per_day2").is_ok());
        for bad in ["", "Dashboard", "2fast", "a-b", "a.b", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(schema_name("dashboard", 3), "proj_dashboard_v3");
        assert!(schema_name(&"x".repeat(40), u32::MAX).len() <= 63);
    }
}
