//! Commands on an organization's aggregate, and its state read from the log:
//! what the use cases of identity, administration and ingest share.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use trackhrs_commands::{CommandError, CommandHandler, Executed};
use trackhrs_domain::organization::{self, OrgCommand, Organization};
use trackhrs_domain::{Aggregate, Token};
use trackhrs_nats::{CommitMeta, EventStore};

use crate::error::AppError;

/// The microseconds since the Unix epoch, as commits record them.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// The id of an org's `Organization` aggregate.
pub(crate) fn aggregate_id() -> Token {
    Token::new(organization::AGGREGATE_ID)
        .unwrap_or_else(|_| unreachable!("the aggregate id is a token"))
}

/// Hex SHA-256 of `bytes`: the request digest of a command.
pub(crate) fn digest_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An id derived from the command id, so that a retried command names the
/// same new member or device as the first attempt: `<prefix>_<24 hex>`.
pub(crate) fn derived_id(prefix: &str, org: &Token, purpose: &str, command_id: &str) -> Token {
    let digest = Sha256::digest(format!("{org}\u{0}{purpose}\u{0}{command_id}").as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Token::new(format!("{prefix}_{hex}")).unwrap_or_else(|_| unreachable!("hex ids are tokens"))
}

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The aggregate's version after it.
    pub version: u64,
    /// The stream position of its commit (0 when it changed nothing).
    pub position: u64,
    /// True when the command id had been recorded before and this is the
    /// original result.
    pub duplicate: bool,
}

impl From<&Executed> for Outcome {
    fn from(executed: &Executed) -> Self {
        Self {
            version: executed.version,
            position: executed.appended.map_or(0, |a| a.position),
            duplicate: executed.appended.is_some_and(|a| a.duplicate),
        }
    }
}

/// Executes commands on organizations and reads their state from the log.
#[derive(Clone)]
pub struct OrgCommands {
    commands: CommandHandler,
}

impl OrgCommands {
    pub(crate) fn new(store: EventStore) -> Self {
        Self {
            commands: CommandHandler::new(store),
        }
    }

    pub(crate) fn handler(&self) -> &CommandHandler {
        &self.commands
    }

    pub(crate) fn store(&self) -> &EventStore {
        self.commands.store()
    }

    /// Executes a command on the org's aggregate as `actor`.
    pub async fn execute(
        &self,
        org: &Token,
        actor: &str,
        command_id: &str,
        command: OrgCommand,
    ) -> Result<Outcome, AppError> {
        self.execute_on::<Organization>(org, &aggregate_id(), actor, command_id, command)
            .await
    }

    /// Executes a command on aggregate `A` `id` of `org` as `actor`.
    pub(crate) async fn execute_on<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
        actor: &str,
        command_id: &str,
        command: A::Command,
    ) -> Result<Outcome, AppError>
    where
        AppError: From<CommandError<A::Error>>,
    {
        // The command (without secrets, which never enter commands) is what
        // a retry must repeat exactly.
        let meta = crate::request::stamp(
            CommitMeta::new(command_id, actor, now_micros())
                .with_request_digest(digest_hex(format!("{command:?}").as_bytes())),
        );
        let executed = self.commands.execute::<A>(org, id, command, &meta).await?;
        Ok(Outcome::from(&executed))
    }

    /// The organization's current state, read from the log (not from this
    /// replica's cache, so changes made through other replicas count).
    pub async fn state(&self, org: &Token) -> Result<Arc<Organization>, AppError> {
        Ok(self
            .store()
            .load_fresh::<Organization>(org, &aggregate_id())
            .await?
            .state)
    }

    /// The members whose data `caller` sees under `scope`: `None` for the
    /// whole org; for a team scope, the members of the teams they manage
    /// and themselves.
    pub(crate) async fn visible(
        &self,
        caller: &crate::caller::Caller,
        org: &Token,
        scope: trackhrs_domain::permissions::Scope,
    ) -> Result<Option<Vec<String>>, AppError> {
        use trackhrs_domain::permissions::Scope;
        Ok(match scope {
            Scope::Org => None,
            Scope::Own | Scope::Nothing => Some(vec![caller.person.to_string()]),
            Scope::Team => {
                let state = self.cached_state(org).await?;
                let mut people: Vec<String> = state
                    .managed_members(&caller.person)
                    .into_iter()
                    .map(|p| p.to_string())
                    .collect();
                people.push(caller.person.to_string());
                Some(people)
            }
        })
    }

    /// The organization's state from this replica's cache, which is evicted
    /// whenever any replica commits to the org (`follow_org_commits`).
    pub(crate) async fn cached_state(&self, org: &Token) -> Result<Arc<Organization>, AppError> {
        Ok(self
            .store()
            .load::<Organization>(org, &aggregate_id())
            .await?
            .state)
    }
}

/// Evicts this replica's cached state of an organization whenever any
/// replica commits to it (a core NATS subscription sees every JetStream
/// publish), so ingest decides on the org's current devices and privacy
/// policy. Runs until the connection closes.
pub(crate) async fn follow_org_commits(store: EventStore) {
    use futures::StreamExt as _;
    let subject = EventStore::subjects_of::<Organization>();
    match store.client().subscribe(subject.clone()).await {
        Ok(mut commits) => {
            while let Some(msg) = commits.next().await {
                store.forget(msg.subject.as_str());
            }
        }
        Err(e) => tracing::error!(subject, error = %e, "cannot follow organization commits"),
    }
}
