//! What every service of the gateway shares: the command handler, the
//! credential store, PostgreSQL for read models, and the helpers that turn
//! requests into commands and read-model queries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tonic::Status;
use trackhrs_commands::{CommandHandler, Executed};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{self, OrgCommand, Organization, Role};
use trackhrs_nats::CommitMeta;
use trackhrs_projections::{Waited, directory, live_schema, wait_for_position};
use trackhrs_schemas::org::v1 as pb;

use crate::auth::Auth;
use crate::status;

/// The gateway's shared state.
pub struct Core {
    /// Executes commands against the event store.
    pub commands: CommandHandler,
    /// Credentials and tokens.
    pub auth: Auth,
    /// PostgreSQL (read models and credentials).
    pub pool: Pool,
    /// How long a query waits for a read model to reach `min_position`.
    pub read_wait: Duration,
    /// Upload limits.
    pub ingest: crate::ingest::IngestConfig,
    /// Dashboards served recently, evicted per org when the activity
    /// projection commits (see `dashboard.rs`).
    pub dashboards: crate::dashboard::DashboardCache,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// The id of an org's `Organization` aggregate.
pub fn org_aggregate() -> Token {
    Token::new(organization::AGGREGATE_ID)
        .unwrap_or_else(|_| unreachable!("the aggregate id is a token"))
}

/// Hex SHA-256 of `bytes`: the request digest of a command.
pub fn digest_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An id derived from the command id, so that a retried command names the
/// same new member or device as the first attempt: `<prefix>_<24 hex>`.
pub fn derived_id(prefix: &str, org: &Token, purpose: &str, command_id: &str) -> Token {
    let digest = Sha256::digest(format!("{org}\u{0}{purpose}\u{0}{command_id}").as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Token::new(format!("{prefix}_{hex}")).unwrap_or_else(|_| unreachable!("hex ids are tokens"))
}

/// The wire result of a command.
pub fn command_result(executed: &Executed) -> pb::CommandResult {
    pb::CommandResult {
        version: executed.version,
        position: executed.appended.map_or(0, |a| a.position),
        duplicate: executed.appended.is_some_and(|a| a.duplicate),
    }
}

impl Core {
    /// Executes a command on the org's aggregate as `actor`.
    pub async fn org_command(
        &self,
        org: &Token,
        actor: &str,
        command_id: &str,
        command: OrgCommand,
    ) -> Result<Executed, Status> {
        let id = org_aggregate();
        // The command (without secrets, which never enter commands) is what
        // a retry must repeat exactly.
        let meta = CommitMeta::new(command_id, actor, now_micros())
            .with_request_digest(digest_hex(format!("{command:?}").as_bytes()));
        self.commands
            .execute::<Organization>(org, &id, command, &meta)
            .await
            .map_err(status::org_command)
    }

    /// The organization's current state, read from the log (not from this
    /// replica's cache, so changes made through other replicas count).
    pub async fn organization(&self, org: &Token) -> Result<Arc<Organization>, Status> {
        Ok(self
            .commands
            .store()
            .load_fresh::<Organization>(org, &org_aggregate())
            .await
            .map_err(|e| status::store(&e))?
            .state)
    }

    /// A member's role if they are active, on fresh state.
    pub async fn active_role(&self, org: &Token, person: &str) -> Result<Option<Role>, Status> {
        let state = self.organization(org).await?;
        Ok(Token::new(person)
            .ok()
            .and_then(|p| state.members.get(&p).cloned())
            .filter(|m| m.active)
            .map(|m| m.role))
    }

    /// Whether a device is enrolled and not revoked, on fresh state.
    pub async fn device_active(&self, org: &Token, device: &Token) -> Result<bool, Status> {
        let state = self.organization(org).await?;
        Ok(state.devices.get(device).is_some_and(|d| !d.revoked))
    }

    /// The caller's current role from the directory (not the token's, which
    /// may be minutes old); PERMISSION_DENIED unless they are active.
    pub async fn directory_role(
        &self,
        client: &tokio_postgres::Client,
        schema: &str,
        org: &Token,
        person: &Token,
    ) -> Result<Role, Status> {
        directory::member_role(client, schema, org.as_str(), person.as_str())
            .await
            .map_err(|e| status::query(&e))?
            .and_then(|(role, active)| active.then_some(role))
            .and_then(|role| crate::validate::role_from_name(&role))
            .ok_or_else(|| {
                Status::permission_denied("you are not an active member of this organization")
            })
    }

    /// A connection and the live directory schema, after waiting (bounded)
    /// for the directory to pass `min_position`. Returns the position the
    /// answer reflects.
    pub async fn directory(
        &self,
        min_position: u64,
    ) -> Result<(deadpool_postgres::Client, String, u64), Status> {
        self.read_model(directory::NAME, min_position).await
    }

    /// A connection and the live schema of projection `name`, after waiting
    /// (bounded) for it to pass `min_position`. Returns the position the
    /// answer reflects.
    pub async fn read_model(
        &self,
        name: &str,
        min_position: u64,
    ) -> Result<(deadpool_postgres::Client, String, u64), Status> {
        if min_position > 0 {
            let last = self
                .commands
                .store()
                .last_sequence()
                .await
                .map_err(|e| status::store(&e))?;
            if min_position > last {
                return Err(Status::invalid_argument(format!(
                    "min_position: {min_position} is beyond the end of the event log ({last})"
                )));
            }
        }
        // Wait without holding a pooled connection: each look at the
        // catalog borrows one briefly, so waiting readers cannot starve
        // log-ins and uploads of connections.
        let deadline = tokio::time::Instant::now() + self.read_wait;
        let mut pause = Duration::from_millis(5);
        let position = loop {
            let seen = {
                let client = self.pool.get().await.map_err(|e| status::query(&e))?;
                wait_for_position(&client, name, min_position, Duration::ZERO)
                    .await
                    .map_err(|e| status::query(&e))?
            };
            match seen {
                Waited::Reached(p) => break p,
                Waited::TimedOut(seen) if min_position == 0 => break seen.unwrap_or(0),
                Waited::TimedOut(seen) if tokio::time::Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "the {name} read model is at position {} and has not reached {min_position} yet; try again",
                        seen.unwrap_or(0)
                    )));
                }
                Waited::TimedOut(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        };
        let client = self.pool.get().await.map_err(|e| status::query(&e))?;
        let schema = live_schema(&client, name)
            .await
            .map_err(|e| status::query(&e))?
            .ok_or_else(|| {
                Status::unavailable(format!("the {name} read model is still being built"))
            })?;
        Ok((client, schema, position))
    }
}
