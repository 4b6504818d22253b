//! Read access: a read model's live schema after waiting (bounded) for it to
//! reach the position the caller asked for (read-your-writes), and the
//! permission check of every query (the domain's permission table on the
//! caller's current role).

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use trackhrs_domain::organization::Role;
use trackhrs_domain::permissions::{self, Read, Scope};
use trackhrs_nats::EventStore;
use trackhrs_projections::{Waited, directory, live_schema, wait_for_position};

use crate::caller::Caller;
use crate::error::{AppError, ErrorKind, NOT_YOURS};

/// A pooled connection to a read model's live version.
pub(crate) struct ReadModel {
    /// The connection.
    pub(crate) client: Object,
    /// The version's schema.
    pub(crate) schema: String,
    /// The stream position the answer reflects.
    pub(crate) position: u64,
}

/// The read models in PostgreSQL.
#[derive(Clone)]
pub(crate) struct ReadModels {
    pool: Pool,
    store: EventStore,
    wait: Duration,
}

impl ReadModels {
    pub(crate) fn new(pool: Pool, store: EventStore, wait: Duration) -> Self {
        Self { pool, store, wait }
    }

    /// A connection to the live version of projection `name`, after waiting
    /// (bounded) for it to pass `min_position`.
    pub(crate) async fn read_model(
        &self,
        name: &str,
        min_position: u64,
    ) -> Result<ReadModel, AppError> {
        if min_position > 0 {
            let last = self.store.last_sequence().await?;
            if min_position > last {
                return Err(AppError::invalid(
                    "min_position",
                    format!("{min_position} is beyond the end of the event log ({last})"),
                ));
            }
        }
        // Wait without holding a pooled connection: each look at the
        // catalog borrows one briefly, so waiting readers cannot starve
        // log-ins and uploads of connections.
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut pause = Duration::from_millis(5);
        let position = loop {
            let seen = {
                let client = self.pool.get().await?;
                wait_for_position(&client, name, min_position, Duration::ZERO)
                    .await
                    .map_err(|e| crate::error::query(&e))?
            };
            match seen {
                Waited::Reached(p) => break p,
                Waited::TimedOut(seen) if min_position == 0 => break seen.unwrap_or(0),
                Waited::TimedOut(seen) if tokio::time::Instant::now() >= deadline => {
                    return Err(AppError::new(
                        ErrorKind::Timeout,
                        format!(
                            "the {name} read model is at position {} and has not reached {min_position} yet; try again",
                            seen.unwrap_or(0)
                        ),
                    ));
                }
                Waited::TimedOut(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        };
        let client = self.pool.get().await?;
        let schema = live_schema(&client, name)
            .await
            .map_err(|e| crate::error::query(&e))?
            .ok_or_else(|| {
                AppError::unavailable(format!("the {name} read model is still being built"))
            })?;
        Ok(ReadModel {
            client,
            schema,
            position,
        })
    }

    /// The caller's current role from the directory (not the token's, which
    /// may be minutes old); refused unless they are an active member.
    pub(crate) async fn current_role(&self, caller: &Caller) -> Result<Role, AppError> {
        let dir = self.read_model(directory::NAME, 0).await?;
        role_in(&dir, caller).await
    }

    /// What the caller may see of `read`: refused when their current role
    /// may see nothing of it.
    pub(crate) async fn authorize(&self, caller: &Caller, read: Read) -> Result<Scope, AppError> {
        scope_of(self.current_role(caller).await?, read)
    }
}

/// The caller's current role, read through an open directory connection.
pub(crate) async fn role_in(dir: &ReadModel, caller: &Caller) -> Result<Role, AppError> {
    directory::member_role(
        &dir.client,
        &dir.schema,
        caller.org.as_str(),
        caller.person.as_str(),
    )
    .await
    .map_err(|e| crate::error::query(&e))?
    .and_then(|(role, active)| active.then_some(role))
    .and_then(|role| Role::from_name(&role))
    .ok_or_else(|| AppError::not_allowed("you are not an active member of this organization"))
}

/// The scope of `read` for `role`, refused when it is nothing.
pub(crate) fn scope_of(role: Role, read: Read) -> Result<Scope, AppError> {
    match permissions::scope(role, read) {
        Scope::Nothing => Err(AppError::not_allowed(NOT_YOURS)),
        scope => Ok(scope),
    }
}
