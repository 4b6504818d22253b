//! Shared set-up of the projection runtime tests: a real nats-server and a
//! fresh PostgreSQL database per test, organizations appended through the
//! command handler, and a small projection counting events per organization.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, Organization, Role};
use trackhrs_harness::{NatsServer, TestDb, wait_until};
use trackhrs_nats::codec::decode_generic;
use trackhrs_nats::{CommitMeta, DecodedCommit, EventStore, KeyStore, StoreConfig, StoreError};
use trackhrs_projections::{
    ApplyError, Projection, ProjectionError, RunOutcome, Runner, RunnerConfig, catalog,
};

/// How long a test waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn tok(s: &str) -> Token {
    Token::new(s).unwrap()
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Knobs a test turns on the counting projection while it runs.
#[derive(Default)]
pub struct Hooks {
    /// While set, every apply writes its rows and then fails (transient).
    pub fail: AtomicBool,
    /// Applies that failed because of `fail`.
    pub failures: AtomicU32,
    /// Commits of this org are reported as poison.
    pub poison_org: Mutex<Option<String>>,
    /// Commits of this org run a statement that fails (division by zero).
    pub sql_error_org: Mutex<Option<String>>,
    /// Size of every batch handed to apply.
    pub batches: Mutex<Vec<usize>>,
}

/// Counts events per organization into `counts`, and logs every applied
/// commit into `seen` (with binary COPY) so tests can find duplicates and gaps.
#[derive(Clone)]
pub struct CountEvents {
    pub name: String,
    pub version: u32,
    pub subjects: Vec<String>,
    pub hooks: Arc<Hooks>,
}

impl CountEvents {
    pub fn new(version: u32) -> Self {
        Self {
            name: "org_events".into(),
            version,
            subjects: vec!["evt.*.organization.*".into()],
            hooks: Arc::new(Hooks::default()),
        }
    }
}

impl Projection for CountEvents {
    type Commit = DecodedCommit;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<DecodedCommit, StoreError> {
        decode_generic(keys, subject, sequence, bytes).await
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        self.subjects.clone()
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.counts (org text PRIMARY KEY, events bigint NOT NULL);
             CREATE TABLE {schema}.seen (stream_sequence bigint NOT NULL, org text NOT NULL, events integer NOT NULL);"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[DecodedCommit],
    ) -> Result<(), ApplyError> {
        self.hooks.batches.lock().unwrap().push(batch.len());
        let poison = self.hooks.poison_org.lock().unwrap().clone();
        if let Some(c) = batch.iter().find(|c| Some(&c.org_id) == poison.as_ref()) {
            return Err(ApplyError::Poison {
                stream_sequence: c.stream_sequence,
                reason: format!("org {} is not welcome here", c.org_id),
            });
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {schema}.seen (stream_sequence, org, events) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::INT4]);
        let mut writer = std::pin::pin!(writer);
        let mut per_org: BTreeMap<&str, i64> = BTreeMap::new();
        for c in batch {
            writer
                .as_mut()
                .write(&[
                    &(c.stream_sequence as i64),
                    &c.org_id,
                    &(c.events.len() as i32),
                ])
                .await?;
            *per_org.entry(&c.org_id).or_default() += c.events.len() as i64;
        }
        writer.finish().await?;
        let sql_error = self.hooks.sql_error_org.lock().unwrap().clone();
        if batch.iter().any(|c| Some(&c.org_id) == sql_error.as_ref()) {
            tx.execute("SELECT 1 / 0", &[]).await?;
        }
        let orgs: Vec<&str> = per_org.keys().copied().collect();
        let counts: Vec<i64> = per_org.values().copied().collect();
        tx.execute(
            &format!(
                "INSERT INTO {schema}.counts (org, events)
                 SELECT * FROM unnest($1::text[], $2::bigint[])
                 ON CONFLICT (org) DO UPDATE SET events = counts.events + excluded.events"
            ),
            &[&orgs, &counts],
        )
        .await?;
        if self.hooks.fail.load(Ordering::SeqCst) {
            self.hooks.failures.fetch_add(1, Ordering::SeqCst);
            return Err(ApplyError::Retry(
                "injected failure after writing rows".into(),
            ));
        }
        Ok(())
    }
}

/// A nats-server, the store on it, a fresh database and a command handler.
pub struct Env {
    pub nats: NatsServer,
    pub store: EventStore,
    pub handler: CommandHandler,
    pub db: TestDb,
}

/// Logs to stderr when `TEST_LOG` is set (for example `TEST_LOG=debug`).
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl Env {
    pub async fn start() -> Self {
        init_logs();
        let nats = NatsServer::start().await.unwrap();
        let client = nats.connect().await.unwrap();
        let store = EventStore::provision_and_open(
            client,
            StoreConfig::with_kek(trackhrs_harness::test_kek()),
        )
        .await
        .unwrap();
        let db = TestDb::create().await.unwrap();
        Self {
            nats,
            handler: CommandHandler::new(store.clone()),
            store,
            db,
        }
    }

    pub fn pg_config(&self) -> tokio_postgres::Config {
        self.db.connection_string().parse().unwrap()
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        self.db.connect().await.unwrap()
    }

    /// Starts a runner on its own task; send on the returned sender (or drop
    /// it) to shut it down.
    pub fn spawn_runner<P: Projection>(&self, projection: P, config: RunnerConfig) -> RunnerHandle {
        let runner = Runner::new(projection, self.store.clone(), self.pg_config(), config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async move {
            let _ = rx.await;
        }));
        RunnerHandle {
            stop: Some(tx),
            task,
        }
    }

    /// Creates organization `org` (one commit, one event); returns its stream position.
    pub async fn create_org(&self, org: &str) -> u64 {
        self.execute(org, &format!("create-{org}"), create(org))
            .await
    }

    /// Invites `member` into `org` (one commit, one event).
    pub async fn invite(&self, org: &str, member: &str) -> u64 {
        self.execute(org, &format!("invite-{org}-{member}"), invite(member))
            .await
    }

    /// Executes a command, retrying with the same command id while the store
    /// is unavailable (a retried command is stored once).
    pub async fn execute(&self, org: &str, command_id: &str, command: OrgCommand) -> u64 {
        let meta = CommitMeta::new(command_id, "user:test", now_micros());
        wait_until(PATIENCE, || {
            let command = command.clone();
            let meta = meta.clone();
            async move {
                match self
                    .handler
                    .execute::<Organization>(&tok(org), &tok("org"), command, &meta)
                    .await
                {
                    Ok(done) => Some(done.appended.expect("a commit").position),
                    Err(e) => {
                        tracing::debug!(error = %e, "append failed; retrying");
                        None
                    }
                }
            }
        })
        .await
        .expect("command executed")
    }

    /// Last sequence of the events stream.
    pub async fn last_sequence(&self) -> u64 {
        let js = async_nats::jetstream::new(self.store.client().clone());
        let mut s = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
        s.info().await.unwrap().state.last_sequence
    }
}

pub fn create(org: &str) -> OrgCommand {
    OrgCommand::Create {
        name: format!("Org {org}"),
        owner: tok("owner"),
        owner_email: format!("owner@{org}.test"),
        owner_name: "Olive Owner".into(),
        seats: 1000,
    }
}

pub fn invite(member: &str) -> OrgCommand {
    OrgCommand::InviteMember {
        actor: tok("owner"),
        member: tok(member),
        email: format!("{member}@acme.test"),
        name: format!("Name of {member}"),
        role: Role::Employee,
    }
}

pub struct RunnerHandle {
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<RunOutcome, ProjectionError>>,
}

impl RunnerHandle {
    /// Asks the runner to stop and waits for its outcome.
    pub async fn shutdown(mut self) -> RunOutcome {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("runner stops")
            .unwrap()
            .unwrap()
    }

    /// Waits for the runner to end by itself (retired or dropped).
    pub async fn finished(self) -> RunOutcome {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("runner ends")
            .unwrap()
            .unwrap()
    }
}

/// A config with small batches and a short timer, so tests are quick.
pub fn quick(batch_max: usize) -> RunnerConfig {
    RunnerConfig {
        batch_max,
        batch_wait: Duration::from_millis(200),
        ..Default::default()
    }
}

/// The catalog row of a version.
pub async fn info(
    pg: &tokio_postgres::Client,
    name: &str,
    version: u32,
) -> Option<catalog::VersionInfo> {
    catalog::version_info(pg, name, version).await.unwrap()
}

/// Waits until the version's checkpoint is at least `position`.
pub async fn wait_position(pg: &tokio_postgres::Client, name: &str, version: u32, position: u64) {
    let reached = wait_until(PATIENCE, || async move {
        let i = catalog::version_info(pg, name, version).await.ok()??;
        (i.position >= position).then_some(())
    })
    .await;
    let now = info(pg, name, version).await.map(|i| i.position);
    assert!(
        reached.is_some(),
        "{name} v{version} stuck at {now:?}, wanted {position}"
    );
}

/// `(rows, distinct stream sequences)` of the `seen` log in `schema`.
pub async fn seen(pg: &tokio_postgres::Client, schema: &str) -> (i64, i64) {
    let row = pg
        .query_one(
            &format!("SELECT count(*), count(DISTINCT stream_sequence) FROM {schema}.seen"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Events counted per org in `schema`.
pub async fn counts(pg: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, i64> {
    pg.query(&format!("SELECT org, events FROM {schema}.counts"), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Polls `check` until true, failing the test with `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let ok = wait_until(PATIENCE, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "timed out waiting for: {what}");
}
