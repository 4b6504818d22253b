//! Errors of the projection runtime and of projection handlers.

use tokio_postgres::error::SqlState;

/// What a projection's [`apply`](crate::Projection::apply) can report.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// This one commit cannot be applied by this projection version (bad
    /// data, or a case the handler does not handle). The runner rolls the
    /// transaction back, sends the commit to the dead-letter stream with
    /// `reason`, and applies the rest of the batch without it.
    #[error("commit at stream sequence {stream_sequence} cannot be applied: {reason}")]
    Poison {
        /// Stream sequence of the offending commit (one of the batch).
        stream_sequence: u64,
        /// Why, for the dead letter.
        reason: String,
    },
    /// A PostgreSQL statement failed. A connection or server problem (no
    /// SQLSTATE, or classes 08, 40, 53, 57, 58) is retried with backoff; any
    /// other error is deterministic, so the runner applies the batch again
    /// one commit at a time (each in a savepoint) to find the commit that
    /// causes it and dead-letters that commit alone.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// Any other failure the handler wants retried later (the batch is
    /// rolled back and applied again after a backoff).
    #[error("{0}")]
    Retry(String),
}

/// The commit at `stream_sequence` cannot be applied, for `reason`.
pub(crate) fn poison_at(stream_sequence: u64, reason: impl Into<String>) -> ApplyError {
    ApplyError::Poison {
        stream_sequence,
        reason: reason.into(),
    }
}

impl ApplyError {
    /// True when retrying the same batch later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Poison { .. } => false,
            Self::Postgres(e) => is_transient_pg(e),
            Self::Retry(_) => true,
        }
    }
}

/// An error with its causes, `: `-separated (tokio-postgres shows only
/// "db error" at the top; the server's message is its source). Of a
/// PostgreSQL error only the message, code and constraint are kept: its
/// detail may quote the row ("Failing row contains ..."), which holds
/// people's titles and URLs, and these descriptions reach logs and dead
/// letters.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        match s.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => {
                out.push_str(&format!("{} (SQLSTATE {}", db.message(), db.code().code()));
                if let Some(constraint) = db.constraint() {
                    out.push_str(&format!(", constraint {constraint}"));
                }
                out.push(')');
            }
            None => out.push_str(&s.to_string()),
        }
        source = s.source();
    }
    out
}

/// True for PostgreSQL errors that come from the connection or the server's
/// state rather than from the statement: worth retrying.
pub fn is_transient_pg(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a closed connection, a protocol error.
        return true;
    };
    if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED {
        return true;
    }
    let class = &code.code()[..2];
    matches!(class, "08" | "40" | "53" | "57" | "58")
}

/// What can go wrong in the runtime's own operations.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A projection name that is not `[a-z][a-z0-9_]{0,39}`, a version 0, or
    /// no subject filters.
    #[error("invalid projection definition: {0}")]
    Invalid(String),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// TLS for PostgreSQL cannot be set up.
    #[error(transparent)]
    PgTls(#[from] crate::postgres::PgTlsError),
    /// NATS or JetStream failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// The projection version is not in the catalog.
    #[error("projection {name} version {version} is not registered")]
    UnknownVersion {
        /// Projection name.
        name: String,
        /// Version.
        version: u32,
    },
    /// The live version cannot be dropped; promote another one first.
    #[error(
        "projection {name} version {version} is live; promote another version before dropping it"
    )]
    DropLive {
        /// Projection name.
        name: String,
        /// Version.
        version: u32,
    },
    /// A projection could not apply a replayed dead letter for a reason worth
    /// retrying later.
    #[error("applying: {0}")]
    Apply(String),
    /// The catalog holds something this code does not understand.
    #[error("catalog: {0}")]
    Catalog(String),
    /// A runner's task panicked or was cancelled.
    #[error("projection runner task: {0}")]
    Task(String),
    /// A projection's `migrate` failed.
    #[error("migrating {schema}: {source}")]
    Migrate {
        /// Schema being migrated.
        schema: String,
        /// The cause.
        source: tokio_postgres::Error,
    },
}

impl ProjectionError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }

    /// True when retrying later may succeed (a server unreachable or
    /// restarting), false for a definition or catalog problem.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Postgres(e) | Self::Migrate { source: e, .. } => is_transient_pg(e),
            Self::Nats(_) | Self::Apply(_) => true,
            _ => false,
        }
    }
}

impl From<crate::postgres::ConnectError> for ProjectionError {
    fn from(e: crate::postgres::ConnectError) -> Self {
        match e {
            crate::postgres::ConnectError::Tls(e) => Self::PgTls(e),
            crate::postgres::ConnectError::Postgres(e) => Self::Postgres(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_and_retry_are_classified() {
        let poison = ApplyError::Poison {
            stream_sequence: 3,
            reason: "x".into(),
        };
        assert!(!poison.is_transient());
        assert!(ApplyError::Retry("later".into()).is_transient());
    }
}
