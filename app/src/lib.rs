//! The application layer: the use cases of TrackHrs, between the adapters
//! (the gRPC gateway, the CLI) and the domain, the event store, the read
//! models and the credential store.
//!
//! - [`Identity`]: sign-up, log-in, refresh, log-out, accepting invitations.
//! - [`Administration`]: each command on an organization together with its
//!   side effects (invitation and device tokens, revocations), and the
//!   directory's queries.
//! - [`Ingest`]: admission and recording of the agents' uploads, and the
//!   policy an agent must obey.
//! - [`Activity`]: dashboards (through the [`DashboardCache`]), raw device
//!   timelines and classification rules.
//! - [`Work`]: teams, clients, projects, attribution rules and weekly
//!   timesheets with their approval.
//! - [`Pay`]: the pay policy, leave requests and balances, payroll runs.
//! - [`policy`]: reactions to events that consume the log.
//! - [`request`]: the ids of the request a use case runs for, recorded in
//!   the commits it causes.
//!
//! Architecture invariant: no wire types and no gRPC here; every use case
//! returns [`AppError`], which only the adapters turn into their own codes.
//! Every query checks the domain's permission table
//! (`trackhrs_domain::permissions`) on the caller's current role.

pub mod activity;
pub mod administration;
pub mod cache;
pub mod caller;
pub mod error;
pub mod identity;
pub mod ingest;
pub mod operations;
pub mod org;
pub mod pay;
pub mod policy;
mod reads;
pub mod request;
pub mod work;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use trackhrs_commands::CommandError;
use trackhrs_credentials::{Auth, AuthConfig};
use trackhrs_domain::Token;
use trackhrs_domain::erasure::{ErasureCommand, ErasureError, PersonErasure};
use trackhrs_nats::lease::Lease;
use trackhrs_nats::{CommitMeta, EventStore};

pub use activity::Activity;
pub use administration::Administration;
pub use cache::DashboardCache;
pub use caller::{Authenticator, Caller, DeviceIdentity};
pub use error::{AppError, ErrorKind, NOT_YOURS};
pub use identity::Identity;
pub use ingest::{Ingest, IngestConfig};
pub use operations::{Finder, Operations};
pub use org::{OrgCommands, Outcome};
pub use pay::Pay;
pub use reads::ROLE_TTL;
pub use work::Work;

/// Settings of the application layer.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Token lifetimes and log-in limits.
    pub auth: AuthConfig,
    /// How long a query waits for a read model to reach the position the
    /// caller asked for.
    pub read_wait: Duration,
    /// Upload limits.
    pub ingest: IngestConfig,
    /// The organization whose owners and admins operate the platform
    /// (read models, dead letters); `None`: nobody may.
    pub operator_org: Option<Token>,
    /// Bytes of dashboards (and as many of summaries) each replica keeps
    /// in memory (0: none).
    pub dashboard_cache_bytes: u64,
    /// How often each replica tries the accrual job's lease and, holding
    /// it, accrues leave that is due.
    pub accrual_every: Duration,
    /// How often each replica deletes credentials nothing needs any more.
    pub janitor_every: Duration,
    /// How long one statement of a dashboard, summary, timeline or rules
    /// preview read may run before PostgreSQL cancels it (zero: no limit).
    pub read_timeout: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            read_wait: Duration::from_secs(5),
            ingest: IngestConfig::default(),
            operator_org: None,
            dashboard_cache_bytes: cache::DEFAULT_BYTES,
            accrual_every: Duration::from_secs(60),
            janitor_every: Duration::from_secs(3600),
            read_timeout: Duration::from_secs(15),
        }
    }
}

/// The use cases, over one event store, one PostgreSQL pool and one
/// credential store.
pub struct App {
    authenticator: Authenticator,
    identity: Identity,
    administration: Administration,
    ingest: Ingest,
    activity: Activity,
    operations: Operations,
    work: Work,
    pay: Pay,
    orgs: OrgCommands,
    credentials: Arc<Auth>,
    pool: Pool,
}

impl App {
    /// Opens the application: applies the credential schema, loads the
    /// signing keys, and starts following the log (organization commits
    /// evict this replica's cached org state; the activity projection's
    /// invalidations evict its dashboards).
    pub async fn open(store: EventStore, pool: Pool, config: AppConfig) -> Result<Self, AppError> {
        config.ingest.check()?;
        // The store opens only with a key-encryption key; the signing keys
        // are wrapped under the same one.
        let kek = store.config().kek.clone().ok_or_else(|| {
            AppError::unavailable(format!(
                "no key-encryption key: {}",
                trackhrs_kek::HOW_TO_SET
            ))
        })?;
        let credentials = Arc::new(Auth::open(pool.clone(), config.auth, kek).await?);
        let orgs = OrgCommands::new(store.clone());
        let reads = reads::ReadModels::new(
            pool.clone(),
            store.clone(),
            config.read_wait,
            config.read_timeout,
        );
        let dashboards = DashboardCache::with_capacity(config.dashboard_cache_bytes);
        tokio::spawn(org::follow_org_commits(store.clone()));
        cache::follow_invalidations(
            store.client().clone(),
            trackhrs_projections::activity::NAME,
            dashboards.clone(),
        );
        cache::follow_invalidations(
            store.client().clone(),
            trackhrs_projections::directory::NAME,
            reads.roles().clone(),
        );
        let work = Work::new(orgs.clone(), reads.clone());
        let pay = Pay::new(orgs.clone(), reads.clone());
        let holder = format!("{}-{}", std::process::id(), org::now_micros());
        policy::accrual::run(
            Lease::open(&store, policy::accrual::LEASE, &holder).await?,
            pay.clone(),
            config.accrual_every,
        );
        policy::budget::follow(store.client().clone(), work.clone());
        policy::janitor::run(credentials.clone(), config.janitor_every);
        Ok(Self {
            authenticator: Authenticator::new(credentials.clone()),
            identity: Identity::new(
                credentials.clone(),
                orgs.clone(),
                config.operator_org.clone(),
            ),
            administration: Administration::new(credentials.clone(), orgs.clone(), reads.clone()),
            ingest: Ingest::new(orgs.clone(), config.ingest),
            activity: Activity::new(orgs.clone(), reads.clone(), dashboards),
            work,
            pay,
            operations: Operations::new(reads, store.clone(), pool.clone(), config.operator_org),
            orgs,
            credentials,
            pool,
        })
    }

    /// Closes the PostgreSQL pool (queries after it fail): for a clean exit
    /// before PostgreSQL itself stops.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Checks bearer tokens.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Sign-up, log-in and sessions.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Administration of organizations.
    pub fn administration(&self) -> &Administration {
        &self.administration
    }

    /// The agents' uploads.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Dashboards, timelines and rules.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Teams, projects and timesheets.
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// Leave and payroll.
    pub fn pay(&self) -> &Pay {
        &self.pay
    }

    /// Read models and dead letters, for operators.
    pub fn operations(&self) -> &Operations {
        &self.operations
    }

    /// Lets operators replay the dead letters of the read models `find`
    /// finds by name (the platform's list).
    pub fn with_read_models(mut self, find: Finder) -> Self {
        self.operations.set_finder(find);
        self
    }

    /// Commands on organizations as the system (operator tools, the demo
    /// seed), without a signed-in caller.
    pub fn org_commands(&self) -> &OrgCommands {
        &self.orgs
    }

    /// The credential store (operator tools: keys, demo accounts).
    pub fn credentials(&self) -> &Auth {
        &self.credentials
    }

    /// Whether the event store is reachable now (the NATS connection is up).
    pub fn store_reachable(&self) -> bool {
        self.orgs.store().client().connection_state() == async_nats::connection::State::Connected
    }

    /// Erases a person of `org` (right to be forgotten): destroys their
    /// data key, after which every replay shows their personal data as
    /// erased; then records the erasure in the log (`PersonErased`: the
    /// read models drop their copies, and a key bucket restored from an
    /// older backup is reconciled with it); then deletes their credentials.
    /// The key goes first, so whatever a read model decodes after the
    /// erasure's position reads as erased. Safe to run again after a
    /// failure half-way. Returns the credential rows deleted.
    #[tracing::instrument(skip_all)]
    pub async fn erase_person(&self, org: &Token, person: &Token) -> Result<u64, AppError> {
        let state = self.orgs.state(org).await?;
        if !state.members.contains_key(person) {
            return Err(AppError::new(
                ErrorKind::NotFound,
                "no such person in this organization",
            ));
        }
        self.orgs.store().erase_person(org, person).await?;
        let meta = request::stamp(CommitMeta::new(
            format!("erase-{person}"),
            "operator",
            org::now_micros(),
        ));
        let erase = ErasureCommand::Erase {
            person: person.clone(),
            by: None,
        };
        match self
            .orgs
            .handler()
            .execute::<PersonErasure>(org, person, erase, &meta)
            .await
        {
            Ok(_) | Err(CommandError::Denied(ErasureError::AlreadyErased)) => {}
            Err(e) => return Err(e.into()),
        }
        let rows = self
            .credentials
            .erase_person(org.as_str(), person.as_str())
            .await?;
        Ok(rows)
    }
}

/// A PostgreSQL connection pool (credentials and read-model queries).
pub fn pg_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, AppError> {
    let tls =
        trackhrs_projections::postgres::tls().map_err(|e| AppError::unavailable(e.to_string()))?;
    let manager = deadpool_postgres::Manager::from_config(
        trackhrs_projections::postgres::effective(&config),
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let timeout = Some(Duration::from_secs(5));
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .timeouts(deadpool_postgres::Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        })
        .build()
        .map_err(|e| AppError::unavailable(format!("PostgreSQL pool: {e}")))
}

/// Checks a command id (or an upload's batch id): 1 to 128 characters of
/// `A-Z a-z 0-9 - _ . :`.
pub fn command_id(value: &str) -> Result<String, AppError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(AppError::invalid(
            "command_id",
            "must be 1 to 128 characters of A-Z a-z 0-9 - _ . :",
        ))
    }
}
