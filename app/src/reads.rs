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

use crate::cache::Marks;
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
    /// How long one statement of a bounded read may run.
    timeout: Duration,
}

impl ReadModel {
    /// A read-only transaction (repeatable read when `repeatable`) whose
    /// statements PostgreSQL cancels after the read timeout: a dashboard of
    /// a year of a thousand people cannot hold a connection for minutes.
    pub(crate) async fn bounded(
        &mut self,
        repeatable: bool,
    ) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
        let mut builder = self.client.build_transaction().read_only(true);
        if repeatable {
            builder = builder.isolation_level(tokio_postgres::IsolationLevel::RepeatableRead);
        }
        let tx = builder.start().await?;
        if !self.timeout.is_zero() {
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                self.timeout.as_millis().max(1)
            ))
            .await?;
        }
        Ok(tx)
    }
}

/// A bounded read's failure: a statement the read timeout cancelled
/// answers [`ErrorKind::Timeout`]; anything else as any read failure.
pub(crate) fn bounded_error(error: tokio_postgres::Error) -> AppError {
    if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        tracing::warn!("a read ran past the read timeout and was cancelled");
        return AppError::new(
            ErrorKind::Timeout,
            "the read took longer than the read timeout and was cancelled; ask for a shorter range or fewer people",
        );
    }
    error.into()
}

/// Members' current roles as the directory read model last said (`None`:
/// not an active member), each with the directory's position when read.
/// Evicted per org by the directory's invalidations; an entry older than an
/// org's last invalidation is not served, and none lives longer than
/// [`ROLE_TTL`] (the bound on a missed invalidation).
#[derive(Clone)]
pub(crate) struct Roles {
    known: moka::sync::Cache<(String, String), (Option<Role>, u64)>,
    invalidated: Marks,
}

/// How long a member's role is trusted without a directory invalidation.
pub const ROLE_TTL: Duration = Duration::from_secs(10);

impl Roles {
    fn new() -> Self {
        Self {
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ROLE_TTL)
                .build(),
            invalidated: Marks::new(Some(ROLE_TTL)),
        }
    }

    fn get(&self, key: &(String, String)) -> Option<Option<Role>> {
        self.known
            .get(key)
            .filter(|(_, position)| self.invalidated.fresh(&key.0, *position))
            .map(|(role, _)| role)
    }

    fn put(&self, key: (String, String), role: Option<Role>, position: u64) {
        if self.invalidated.fresh(&key.0, position) {
            self.known.insert(key, (role, position));
        }
    }
}

impl crate::cache::Invalidated for Roles {
    fn evict_org(&self, org: &str, position: u64) {
        self.invalidated.mark(org, position);
    }

    fn clear(&self) {
        self.known.invalidate_all();
    }
}

/// The read models in PostgreSQL.
#[derive(Clone)]
pub(crate) struct ReadModels {
    pool: Pool,
    store: EventStore,
    wait: Duration,
    timeout: Duration,
    roles: Roles,
}

impl ReadModels {
    /// Reads that wait up to `wait` for a position and run bounded
    /// statements for up to `timeout`.
    pub(crate) fn new(pool: Pool, store: EventStore, wait: Duration, timeout: Duration) -> Self {
        Self {
            pool,
            store,
            wait,
            timeout,
            roles: Roles::new(),
        }
    }

    /// The members' roles this replica trusts.
    pub(crate) fn roles(&self) -> &Roles {
        &self.roles
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
            timeout: self.timeout,
        })
    }

    /// The caller's current role from the directory (not the token's, which
    /// may be minutes old; see [`Roles`]); refused unless they are an active
    /// member.
    pub(crate) async fn current_role(&self, caller: &Caller) -> Result<Role, AppError> {
        let key = (caller.org.to_string(), caller.person.to_string());
        let role = match self.roles.get(&key) {
            Some(role) => role,
            None => {
                let dir = self.read_model(directory::NAME, 0).await?;
                let role = active_role(&dir, caller).await?;
                self.roles.put(key, role, dir.position);
                role
            }
        };
        role.ok_or_else(not_a_member)
    }

    /// What the caller may see of `read`: refused when their current role
    /// may see nothing of it.
    pub(crate) async fn authorize(&self, caller: &Caller, read: Read) -> Result<Scope, AppError> {
        scope_of(self.current_role(caller).await?, read)
    }
}

fn not_a_member() -> AppError {
    AppError::not_allowed("you are not an active member of this organization")
}

/// The caller's role if they are an active member, read through an open
/// directory connection.
async fn active_role(dir: &ReadModel, caller: &Caller) -> Result<Option<Role>, AppError> {
    Ok(directory::member_role(
        &dir.client,
        &dir.schema,
        caller.org.as_str(),
        caller.person.as_str(),
    )
    .await
    .map_err(|e| crate::error::query(&e))?
    .and_then(|(role, active)| active.then_some(role))
    .and_then(|role| Role::from_name(&role)))
}

/// The caller's current role, read through an open directory connection.
pub(crate) async fn role_in(dir: &ReadModel, caller: &Caller) -> Result<Role, AppError> {
    active_role(dir, caller).await?.ok_or_else(not_a_member)
}

/// The scope of `read` for `role`, refused when it is nothing.
pub(crate) fn scope_of(role: Role, read: Read) -> Result<Scope, AppError> {
    match permissions::scope(role, read) {
        Scope::Nothing => Err(AppError::not_allowed(NOT_YOURS)),
        scope => Ok(scope),
    }
}
