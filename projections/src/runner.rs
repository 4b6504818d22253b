//! The runner: feeds one projection version from a durable pull consumer,
//! in batches, each applied together with the checkpoint in one PostgreSQL
//! transaction and acknowledged only after that transaction committed.
//! A task of the session fetches and decodes the next batches (up to two
//! ahead) while the session writes the current one; batches are applied,
//! committed and acknowledged in the order they were delivered.
//!
//! # Why no event is lost or applied twice
//!
//! - The checkpoint (last stream sequence passed) lives in the catalog row
//!   and moves in the transaction that writes the batch's rows, so rows and
//!   checkpoint commit or roll back together. Before moving it, the
//!   transaction locks the row and checks the checkpoint is still the one
//!   this session started from; if not (another runner, or a commit whose
//!   acknowledgement was lost), the session starts over from the stored one.
//! - A message at or below the checkpoint is acknowledged and skipped, so a
//!   redelivery never applies twice.
//! - JetStream redelivers an unacknowledged message only after its ack wait,
//!   possibly after newer messages; skipping those newer ones' predecessors
//!   would lose them. So every session starts on a consumer created fresh at
//!   checkpoint + 1 (nothing outstanding), and checks that deliveries come in
//!   order: each delivery's consumer sequence must be the previous one plus
//!   one (the server numbers every delivery, redeliveries included, so a gap
//!   means a message was delivered that this process never got, for example
//!   during a reconnect), and stream sequences must grow. Anything else ends
//!   the session after the batch received so far (which is in order) is
//!   committed; the next session recreates the consumer at the checkpoint.
//! - A message that cannot be decoded, or a commit the projection reports as
//!   poison, is stored in the dead-letter stream (acknowledged by JetStream)
//!   before the transaction that passes it commits.
//!
//! # Checkpoints of filtered projections
//!
//! A projection reads only its subjects, yet read-your-writes asks "has it
//! passed stream sequence P" for any P. When a fetch ends with nothing more
//! pending for the consumer, the runner reads the stream's last sequence L
//! and then the consumer's state; if the consumer still has nothing pending
//! and delivered nothing this session has not seen, every message of its
//! subjects up to L is in hand, and the checkpoint moves to L (in the same
//! transaction as the batch, or alone when the batch is empty).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream;
use tokio_postgres::Client;
use trackhrs_nats::EventStore;

use crate::catalog::{
    self, LOCK_CLASS_RUNNER, VersionInfo, VersionState, migrate, register, select_version,
};
use crate::dlq;
use crate::error::{ProjectionError, describe};
use crate::invalidation;

mod apply;
mod fetch;

use crate::projection::{Committed, Projection, consumer_name, schema_name, validate};
use apply::{Attempt, Prepared, attempt};
use fetch::{Ready, acknowledge, read_ahead, recreate_consumer};

/// Tunables of a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most commits in one batch (one PostgreSQL transaction).
    pub batch_max: usize,
    /// Longest a batch waits to fill up before it is applied as it is. A
    /// version catching up on a backlog does not wait: the backlog's last,
    /// partial batch is applied at once.
    pub batch_wait: Duration,
    /// How long JetStream waits for an acknowledgement before it considers a
    /// delivery lost. Redeliveries are harmless (skipped by the checkpoint);
    /// this only has to exceed the processing time of three batches (a
    /// batch is acknowledged after it commits, and up to two more are
    /// fetched ahead meanwhile).
    pub ack_wait: Duration,
    /// Longest pause between retries when PostgreSQL or NATS fails.
    pub max_backoff: Duration,
    /// Promote this version as soon as it has caught up with the stream
    /// (a rebuild that switches by itself). A version registered when no
    /// version is live is live from the start either way.
    pub promote_when_caught_up: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_max: 100,
            batch_wait: Duration::from_millis(5000),
            ack_wait: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
            promote_when_caught_up: false,
        }
    }
}

/// Why [`Runner::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The shutdown future completed.
    Shutdown,
    /// Another version was promoted; this one is retired and stops.
    Retired,
    /// This version was dropped from the catalog.
    Dropped,
}

/// Runs one projection version. See the module documentation for the
/// guarantees.
pub struct Runner<P> {
    projection: P,
    store: EventStore,
    pg_config: tokio_postgres::Config,
    config: RunnerConfig,
}

/// Why a session (or the whole run) stops.
enum Halt {
    Shutdown,
    Retired,
    Dropped,
    /// Start a new session (consumer recreated at the checkpoint).
    Reset(String),
    Failed(ProjectionError),
}

impl From<ProjectionError> for Halt {
    fn from(e: ProjectionError) -> Self {
        Self::Failed(e)
    }
}

impl From<tokio_postgres::Error> for Halt {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Failed(ProjectionError::Postgres(e))
    }
}

/// The shutdown future, raced against every wait.
struct Stop {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl Stop {
    async fn race<T>(&mut self, f: impl Future<Output = T>) -> Result<T, Halt> {
        if self.fired {
            return Err(Halt::Shutdown);
        }
        tokio::select! {
            biased;
            () = &mut self.future => {
                self.fired = true;
                Err(Halt::Shutdown)
            }
            v = f => Ok(v),
        }
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), Halt> {
        self.race(tokio::time::sleep(d)).await
    }
}

/// What does not change during a run.
struct Ctx<'a, P> {
    projection: &'a P,
    name: &'a str,
    version: u32,
    schema: String,
    consumer: String,
    store: &'a EventStore,
    js: jetstream::Context,
    config: &'a RunnerConfig,
}

/// The event stream (unless stopped first).
async fn events_stream<P>(
    stop: &mut Stop,
    ctx: &Ctx<'_, P>,
) -> Result<jetstream::stream::Stream, Halt> {
    Ok(stop
        .race(ctx.js.get_stream(&ctx.store.config().events_stream))
        .await?
        .map_err(ProjectionError::nats)?)
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl<P: Projection> Runner<P> {
    /// A runner for `projection`, reading the store's events stream and
    /// writing the database of `pg_config` (its own connection, reconnected
    /// as needed).
    pub fn new(
        projection: P,
        store: EventStore,
        pg_config: tokio_postgres::Config,
        config: RunnerConfig,
    ) -> Self {
        Self {
            projection,
            store,
            pg_config,
            config,
        }
    }

    /// Runs until `shutdown` completes (between two batches, or while
    /// waiting), the version is retired by a promotion, or it is dropped.
    /// PostgreSQL and NATS failures are retried with backoff (up to
    /// [`RunnerConfig::max_backoff`]); only a definition or catalog error
    /// ends the run with an error.
    ///
    /// On start: migrates the catalog, registers the version (creating its
    /// schema and tables), creates the dead-letter stream, and takes the
    /// version's runner lock (a PostgreSQL advisory lock), so a second runner
    /// of the same version waits as a standby.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, ProjectionError> {
        validate(&self.projection)?;
        let name = self.projection.name().to_owned();
        let version = self.projection.version();
        let mut run = Run {
            ctx: Ctx {
                projection: &self.projection,
                name: &name,
                version,
                schema: schema_name(&name, version),
                consumer: consumer_name(&name, version),
                store: &self.store,
                js: jetstream::new(self.store.client().clone()),
                config: &self.config,
            },
            pg_config: &self.pg_config,
            pg: None,
            stop: Stop {
                future: Box::pin(shutdown),
                fired: false,
            },
            backoff: MIN_BACKOFF,
        };
        // Set-up runs until it succeeds once; later sessions must not
        // register the version again (it may have been dropped meanwhile).
        let mut set_up = false;
        loop {
            let halt = if set_up {
                run.session().await
            } else {
                match run.setup().await {
                    Ok(()) => {
                        set_up = true;
                        run.session().await
                    }
                    Err(h) => h,
                }
            };
            match halt {
                Halt::Shutdown => return Ok(RunOutcome::Shutdown),
                Halt::Retired => return Ok(RunOutcome::Retired),
                Halt::Dropped => return Ok(RunOutcome::Dropped),
                Halt::Reset(why) => {
                    tracing::info!(projection = %name, version, reason = %why, "restarting the consumer at the checkpoint");
                }
                Halt::Failed(e) if e.is_transient() => {
                    tracing::warn!(projection = %name, version, error = %describe(&e), "projection runner failed; retrying");
                    if run.pause().await.is_err() {
                        return Ok(RunOutcome::Shutdown);
                    }
                }
                Halt::Failed(e) => return Err(e),
            }
        }
    }
}

struct Run<'a, P> {
    ctx: Ctx<'a, P>,
    pg_config: &'a tokio_postgres::Config,
    /// Connection holding the runner lock; `None` after a failure.
    pg: Option<Client>,
    stop: Stop,
    backoff: Duration,
}

impl<P: Projection> Run<'_, P> {
    async fn pause(&mut self) -> Result<(), Halt> {
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(self.ctx.config.max_backoff);
        self.stop.sleep(d).await
    }

    /// Connects (when not connected), takes the runner lock, migrates the
    /// catalog, registers the version and creates the dead-letter stream.
    async fn setup(&mut self) -> Result<(), Halt> {
        self.connect().await?;
        let client = connected(&mut self.pg)?;
        self.stop.race(migrate(client)).await??;
        let events = events_stream(&mut self.stop, &self.ctx).await?;
        let info = self
            .stop
            .race(register(client, self.ctx.projection, &events))
            .await??;
        check_state(&info)?;
        let replicas = self.ctx.store.config().replicas;
        self.stop
            .race(dlq::ensure_stream(&self.ctx.js, replicas))
            .await??;
        Ok(())
    }

    /// Opens the connection and takes the runner lock, unless connected.
    async fn connect(&mut self) -> Result<(), Halt> {
        if self.pg.as_ref().is_some_and(Client::is_closed) {
            self.pg = None;
        }
        if self.pg.is_none() {
            let client = self
                .stop
                .race(crate::postgres::connect(self.pg_config))
                .await?
                .map_err(ProjectionError::from)?;
            let mut waiting = false;
            loop {
                let row = self
                    .stop
                    .race(client.query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&LOCK_CLASS_RUNNER, &self.ctx.schema],
                    ))
                    .await??;
                if row.get::<_, bool>(0) {
                    break;
                }
                if !waiting {
                    tracing::info!(schema = %self.ctx.schema, "another runner holds this projection version; standing by");
                    waiting = true;
                }
                self.stop.sleep(Duration::from_secs(1)).await?;
            }
            self.pg = Some(client);
        }
        Ok(())
    }

    /// One session: a fresh consumer at checkpoint + 1, then batches until
    /// something stops it.
    async fn session(&mut self) -> Halt {
        match self.session_inner().await {
            Err(h) => h,
            Ok(never) => match never {},
        }
    }

    async fn session_inner(&mut self) -> Result<Infallible, Halt> {
        let name = self.ctx.name;
        let version = self.ctx.version;
        self.connect().await?;
        let client = connected(&mut self.pg)?;
        let tx = self.stop.race(client.transaction()).await??;
        let info = select_version(&tx, name, version, false)
            .await?
            .ok_or(Halt::Dropped)?;
        tx.commit().await?;
        check_state(&info)?;
        let mut position = info.position;
        let mut live = info.state == VersionState::Live;
        let events = events_stream(&mut self.stop, &self.ctx).await?;
        let consumer = self
            .stop
            .race(recreate_consumer(&self.ctx, &events, position))
            .await??;
        tracing::debug!(
            projection = name,
            version,
            position,
            "projection session started"
        );
        // Batches are fetched and decoded by a task of their own, up to two
        // ahead, so decoding the next batch overlaps with PostgreSQL writing
        // this one. It ends with the session (aborted when dropped).
        let (ahead, mut ready) = tokio::sync::mpsc::channel(1);
        let (committed, committed_rx) = tokio::sync::watch::channel(position);
        let _reader = AbortOnDrop(tokio::spawn(read_ahead::<P>(
            self.ctx.store.clone(),
            consumer,
            events,
            self.ctx.consumer.clone(),
            self.ctx.config.clone(),
            committed_rx,
            ahead,
        )));
        loop {
            let Ready {
                fetched,
                prepared,
                caught_up,
            } = self
                .stop
                .race(ready.recv())
                .await?
                .ok_or_else(|| Halt::Reset("the read-ahead task ended".into()))??;
            let batch_last = fetched
                .deliveries
                .iter()
                .map(|d| d.sequence)
                .max()
                .unwrap_or(0);
            let target = position.max(batch_last).max(caught_up.unwrap_or(0));
            // Commits of this projection's subjects still to apply.
            metrics::gauge!(
                "trackhrs_projection_lag",
                "projection" => name.to_owned(),
                "version" => version.to_string()
            )
            .set(fetched.last_pending.unwrap_or(0) as f64);
            if target > position {
                let (orgs, now_live) = self.commit_batch(prepared, position, target).await?;
                position = target;
                committed.send_replace(position);
                live = now_live;
                self.backoff = MIN_BACKOFF;
                if live {
                    let nats = self.ctx.store.client();
                    self.stop
                        .race(invalidation::publish_orgs(nats, name, &orgs, position))
                        .await?;
                }
            }
            self.stop.race(acknowledge(&fetched.deliveries)).await?;
            if fetched.deliveries.is_empty() && target == position {
                // Idle: notice a promotion of another version or a drop
                // without waiting for the next event.
                let client = connected(&mut self.pg)?;
                let info = self
                    .stop
                    .race(catalog::version_info(client, name, version))
                    .await??
                    .ok_or(Halt::Dropped)?;
                check_state(&info)?;
            }
            if let Some(why) = fetched.anomaly {
                return Err(Halt::Reset(why));
            }
            if !live
                && self.ctx.config.promote_when_caught_up
                && caught_up.is_some_and(|last| position >= last)
            {
                self.connect().await?;
                let client = connected(&mut self.pg)?;
                catalog::promote(client, self.ctx.store.client(), name, version).await?;
                live = true;
            }
        }
    }

    /// Applies the batch and moves the checkpoint from `position` to
    /// `target` in one transaction, retrying until it commits. Returns the
    /// organizations touched and whether the version is live.
    async fn commit_batch(
        &mut self,
        mut prepared: Prepared<P::Commit>,
        position: u64,
        target: u64,
    ) -> Result<(BTreeSet<String>, bool), Halt> {
        let mut isolate = false;
        loop {
            self.connect().await?;
            let client = connected(&mut self.pg)?;
            let result = self
                .stop
                .race(attempt(
                    &self.ctx,
                    client,
                    &mut prepared,
                    position,
                    target,
                    isolate,
                ))
                .await?;
            match result {
                Ok(Attempt::Committed { live }) => {
                    let orgs = prepared
                        .commits
                        .iter()
                        .map(|c| c.org_id().to_owned())
                        .collect();
                    let labels = [
                        ("projection", self.ctx.name.to_owned()),
                        ("version", self.ctx.version.to_string()),
                    ];
                    let events: usize = prepared.commits.iter().map(Committed::events).sum();
                    metrics::counter!("trackhrs_projection_events_applied_total", &labels)
                        .increment(events as u64);
                    metrics::histogram!("trackhrs_projection_batch_commits", &labels)
                        .record(prepared.commits.len() as f64);
                    metrics::counter!("trackhrs_projection_dead_letters_total", &labels)
                        .increment(prepared.poison.len() as u64);
                    metrics::gauge!("trackhrs_projection_position", &labels).set(target as f64);
                    tracing::debug!(
                        projection = self.ctx.name,
                        version = self.ctx.version,
                        commits = prepared.commits.len(),
                        dead_letters = prepared.poison.len(),
                        position = target,
                        "batch committed"
                    );
                    return Ok((orgs, live));
                }
                Ok(Attempt::Again) => {}
                Ok(Attempt::Isolate(why)) => {
                    tracing::warn!(projection = self.ctx.name, error = %why, "batch failed; applying it one commit at a time to find the cause");
                    isolate = true;
                }
                Err(Halt::Failed(e)) if e.is_transient() => {
                    tracing::warn!(projection = self.ctx.name, error = %describe(&e), "batch not committed; retrying");
                    self.pause().await?;
                }
                Err(h) => return Err(h),
            }
        }
    }
}

/// Aborts a task when dropped: the read-ahead task lives as long as its
/// session, a supervisor's rebuild as long as its supervision.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The open connection.
fn connected(pg: &mut Option<Client>) -> Result<&mut Client, Halt> {
    pg.as_mut()
        .ok_or_else(|| Halt::Reset("no PostgreSQL connection".into()))
}

/// Stops a run of a version that is no longer wanted.
fn check_state(info: &VersionInfo) -> Result<(), Halt> {
    match info.state {
        VersionState::Retired => Err(Halt::Retired),
        VersionState::Building | VersionState::Live => Ok(()),
    }
}
