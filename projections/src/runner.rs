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

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Message};
use bytes::Bytes;
use futures::StreamExt;
use tokio_postgres::{Client, NoTls};
use trackhrs_nats::{EventStore, StoreError};

use crate::catalog::{
    self, LOCK_CLASS_RUNNER, VersionInfo, VersionState, advance, migrate, register, select_version,
};
use crate::dlq::{self, Poisoned};
use crate::error::{ApplyError, ProjectionError, describe};
use crate::invalidation;
use crate::projection::{Committed, Projection, consumer_name, schema_name, validate};

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

/// One delivered message of a batch.
struct Delivery {
    msg: Message,
    sequence: u64,
    /// At or below the checkpoint: acknowledge, do not apply.
    skip: bool,
}

/// A fetched batch.
struct Fetched {
    deliveries: Vec<Delivery>,
    /// `pending` of the last delivery (messages left for the consumer).
    last_pending: Option<u64>,
    /// Why the session must start over after this batch, if it must.
    anomaly: Option<String>,
}

/// A batch decoded and split.
struct Prepared<C> {
    commits: Vec<C>,
    poison: Vec<Poisoned>,
    /// Subject and original bytes of every message to apply, by stream
    /// sequence, for dead-lettering a commit the projection refuses.
    originals: HashMap<u64, (String, Bytes)>,
}

enum Attempt {
    Committed {
        live: bool,
    },
    /// A poison commit was taken out; apply the rest at once.
    Again,
    /// A deterministic error without a named commit: apply one by one.
    Isolate(String),
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
        let info = self
            .stop
            .race(register(client, self.ctx.projection))
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
            let (client, connection) = self.stop.race(self.pg_config.connect(NoTls)).await??;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "projection runner's PostgreSQL connection ended");
                }
            });
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
        let events = self
            .stop
            .race(
                self.ctx
                    .js
                    .get_stream(&self.ctx.store.config().events_stream),
            )
            .await?
            .map_err(ProjectionError::nats)?;
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

/// A batch fetched and decoded ahead of the applying loop.
struct Ready<C> {
    fetched: Fetched,
    prepared: Prepared<C>,
    /// From [`probe`], when nothing was pending after this batch.
    caught_up: Option<u64>,
}

/// Aborts a task when dropped: the read-ahead task lives as long as its
/// session, a supervisor's rebuild as long as its supervision.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches and decodes the session's batches in order and hands them over
/// (the channel holds one more). Ends after a batch with an anomaly, on a
/// fetch error (sent on), or when the session drops the receiver. Decoding
/// that fails for want of the key store is retried with backoff.
async fn read_ahead<P: Projection>(
    store: EventStore,
    consumer: PullConsumer,
    mut events: jetstream::stream::Stream,
    consumer_name: String,
    config: RunnerConfig,
    committed: tokio::sync::watch::Receiver<u64>,
    ready: tokio::sync::mpsc::Sender<Result<Ready<P::Commit>, ProjectionError>>,
) {
    // Consumer sequence of the next delivery (the consumer is new).
    let mut next_delivery = 1;
    let mut last_sequence = *committed.borrow();
    let mut backlog = true;
    loop {
        // The session's checkpoint: a redelivery at or below it is skipped.
        let position = *committed.borrow();
        let fetched = match fetch(
            &consumer,
            &config,
            backlog,
            position,
            &mut next_delivery,
            &mut last_sequence,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                let _ = ready.send(Err(e)).await;
                return;
            }
        };
        backlog = fetched.deliveries.len() >= config.batch_max;
        let caught_up = if fetched.anomaly.is_none() && fetched.last_pending.unwrap_or(0) == 0 {
            probe(&mut events, &consumer_name, next_delivery - 1).await
        } else {
            None
        };
        let mut backoff = MIN_BACKOFF;
        let prepared = loop {
            match prepare::<P>(&store, &fetched.deliveries).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(projection = %consumer_name, error = %e, "cannot decode the batch; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        };
        let last = fetched.anomaly.is_some();
        let batch = Ready {
            fetched,
            prepared,
            caught_up,
        };
        if ready.send(Ok(batch)).await.is_err() || last {
            return;
        }
    }
}

/// Pulls up to `batch_max` messages. While catching up (`backlog`: the
/// previous batch was full, or the session just started) it takes only what
/// the stream holds now, so the last partial batch of a backlog is applied
/// at once; otherwise it waits at most `batch_wait` for a batch to fill.
async fn fetch(
    consumer: &PullConsumer,
    config: &RunnerConfig,
    backlog: bool,
    position: u64,
    next_delivery: &mut u64,
    last_sequence: &mut u64,
) -> Result<Fetched, ProjectionError> {
    // Either way the request expires: a lost reply (a reconnect, a server
    // restart) ends the batch instead of waiting for it forever.
    let batch = if backlog {
        consumer
            .fetch()
            .max_messages(config.batch_max)
            .expires(config.batch_wait)
            .messages()
            .await
    } else {
        consumer
            .batch()
            .max_messages(config.batch_max)
            .expires(config.batch_wait)
            .messages()
            .await
    };
    let mut batch = batch.map_err(ProjectionError::nats)?;
    let mut fetched = Fetched {
        deliveries: Vec::new(),
        last_pending: None,
        anomaly: None,
    };
    while let Some(item) = batch.next().await {
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                fetched.anomaly = Some(format!("pull failed: {e}"));
                break;
            }
        };
        let (sequence, delivery, delivered, pending) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                i.consumer_sequence,
                i.delivered,
                i.pending,
            ),
            Err(e) => {
                fetched.anomaly = Some(format!("message without JetStream metadata: {e}"));
                break;
            }
        };
        if delivery != *next_delivery {
            fetched.anomaly = Some(format!(
                "delivery {delivery} arrived where {} was expected (a delivery was missed or the consumer was reset)",
                *next_delivery
            ));
            break;
        }
        *next_delivery += 1;
        if sequence <= position {
            fetched.deliveries.push(Delivery {
                msg,
                sequence,
                skip: true,
            });
        } else if sequence <= *last_sequence || delivered > 1 {
            fetched.anomaly = Some(format!(
                "stream sequence {sequence} (delivery attempt {delivered}) arrived after {}",
                *last_sequence
            ));
            break;
        } else {
            *last_sequence = sequence;
            fetched.deliveries.push(Delivery {
                msg,
                sequence,
                skip: false,
            });
        }
        fetched.last_pending = Some(pending);
    }
    Ok(fetched)
}

/// Deletes the version's consumer if it exists and creates it at
/// `position + 1`, so nothing is outstanding on it.
async fn recreate_consumer<P: Projection>(
    ctx: &Ctx<'_, P>,
    events: &jetstream::stream::Stream,
    position: u64,
) -> Result<PullConsumer, ProjectionError> {
    if let Err(e) = events.delete_consumer(&ctx.consumer).await {
        let missing = matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref je)
            if je.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND);
        if !missing {
            return Err(ProjectionError::nats(e));
        }
    }
    let mut subjects = ctx.projection.subjects();
    let (filter_subject, filter_subjects) = if subjects.len() == 1 {
        (subjects.remove(0), Vec::new())
    } else {
        (String::new(), subjects)
    };
    let batch_max = i64::try_from(ctx.config.batch_max).unwrap_or(i64::MAX);
    events
        .create_consumer(pull::Config {
            durable_name: Some(ctx.consumer.clone()),
            description: Some(format!("projection {} version {}", ctx.name, ctx.version)),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: ctx.config.ack_wait,
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            max_ack_pending: batch_max.saturating_mul(4).max(1000),
            ..Default::default()
        })
        .await
        .map_err(ProjectionError::nats)
}

/// The open connection.
fn connected(pg: &mut Option<Client>) -> Result<&mut Client, Halt> {
    pg.as_mut()
        .ok_or_else(|| Halt::Reset("no PostgreSQL connection".into()))
}

/// Acknowledges every delivery of a committed batch. A lost acknowledgement
/// only means a redelivery, which the checkpoint skips.
async fn acknowledge(deliveries: &[Delivery]) {
    for d in deliveries {
        if let Err(e) = d.msg.ack().await {
            tracing::debug!(error = %e, "acknowledgement not sent; the redelivery will be skipped");
            return;
        }
    }
}

/// Stops a run of a version that is no longer wanted.
fn check_state(info: &VersionInfo) -> Result<(), Halt> {
    match info.state {
        VersionState::Retired => Err(Halt::Retired),
        VersionState::Building | VersionState::Live => Ok(()),
    }
}

/// When the consumer has nothing pending and delivered nothing unseen, the
/// stream's last sequence read before that check: every message of the
/// projection's subjects up to it has been delivered to this session.
async fn probe(
    events: &mut jetstream::stream::Stream,
    consumer: &str,
    last_delivery: u64,
) -> Option<u64> {
    let last = events.info().await.ok()?.state.last_sequence;
    let info = events.consumer_info(consumer).await.ok()?;
    (info.num_pending == 0 && info.delivered.consumer_sequence == last_delivery).then_some(last)
}

/// Decodes the deliveries to apply, on as many tasks as there are cores
/// (decoding and unsealing is most of a batch's CPU), keeping stream order.
/// An undecodable message is poison; a failure to reach the key store is an
/// error (retried).
async fn prepare<P: Projection>(
    store: &EventStore,
    deliveries: &[Delivery],
) -> Result<Prepared<P::Commit>, StoreError> {
    let todo: Vec<(String, u64, Bytes)> = deliveries
        .iter()
        .filter(|d| !d.skip)
        .map(|d| (d.msg.subject.to_string(), d.sequence, d.msg.payload.clone()))
        .collect();
    let tasks = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len().max(1));
    let chunk = todo.len().div_ceil(tasks).max(1);
    let mut handles = Vec::with_capacity(tasks);
    for part in todo.chunks(chunk) {
        let keys = store.keys().clone();
        let part = part.to_vec();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(part.len());
            for (subject, sequence, payload) in part {
                let decoded = P::decode(&keys, &subject, sequence, &payload).await;
                out.push((subject, sequence, payload, decoded));
            }
            out
        }));
    }
    let mut prepared = Prepared {
        commits: Vec::with_capacity(todo.len()),
        poison: Vec::new(),
        originals: HashMap::with_capacity(todo.len()),
    };
    for handle in handles {
        let decoded = handle
            .await
            .map_err(|e| StoreError::Unavailable(format!("decoding task: {e}")))?;
        for (subject, sequence, payload, result) in decoded {
            match result {
                Ok(commit) => prepared.commits.push(commit),
                Err(StoreError::Decode { reason, .. }) => prepared.poison.push(Poisoned {
                    subject: subject.clone(),
                    stream_sequence: sequence,
                    reason: format!("cannot decode: {reason}"),
                    payload: payload.clone(),
                }),
                Err(e) => return Err(e),
            }
            prepared.originals.insert(sequence, (subject, payload));
        }
    }
    Ok(prepared)
}

/// One try at committing a batch.
async fn attempt<P: Projection>(
    ctx: &Ctx<'_, P>,
    client: &mut Client,
    prepared: &mut Prepared<P::Commit>,
    position: u64,
    target: u64,
    isolate: bool,
) -> Result<Attempt, Halt> {
    let mut tx = client.transaction().await?;
    let info = select_version(&tx, ctx.name, ctx.version, true)
        .await?
        .ok_or(Halt::Dropped)?;
    check_state(&info)?;
    if info.position != position {
        return Err(Halt::Reset(format!(
            "the checkpoint is {} where this session expected {position}",
            info.position
        )));
    }
    if !prepared.commits.is_empty() {
        if isolate {
            let mut failed = Vec::new();
            for (i, commit) in prepared.commits.iter().enumerate() {
                let savepoint = tx.savepoint("trackhrs_commit").await?;
                match ctx
                    .projection
                    .apply(&savepoint, &ctx.schema, std::slice::from_ref(commit))
                    .await
                {
                    Ok(()) => savepoint.commit().await?,
                    Err(e) if e.is_transient() => return Err(apply_failure(e)),
                    Err(e) => {
                        savepoint.rollback().await?;
                        failed.push((i, reason_of(e)));
                    }
                }
            }
            for (i, reason) in failed.into_iter().rev() {
                take_poison(prepared, i, reason);
            }
        } else {
            match ctx
                .projection
                .apply(&tx, &ctx.schema, &prepared.commits)
                .await
            {
                Ok(()) => {}
                Err(ApplyError::Poison {
                    stream_sequence,
                    reason,
                }) => {
                    return Ok(
                        match prepared
                            .commits
                            .iter()
                            .position(|c| c.stream_sequence() == stream_sequence)
                        {
                            Some(i) => {
                                take_poison(prepared, i, reason);
                                Attempt::Again
                            }
                            None => Attempt::Isolate(format!(
                                "poison reported for stream sequence {stream_sequence}, which is not in the batch: {reason}"
                            )),
                        },
                    );
                }
                Err(e) if e.is_transient() => return Err(apply_failure(e)),
                Err(e) => return Ok(Attempt::Isolate(describe(&e))),
            }
        }
    }
    for p in &prepared.poison {
        dlq::publish(&ctx.js, ctx.name, ctx.version, p).await?;
    }
    let events: usize = prepared.commits.iter().map(|c| c.events()).sum();
    advance(
        &tx,
        ctx.name,
        ctx.version,
        target,
        prepared.commits.len() as u64,
        events as u64,
        prepared.poison.len() as u64,
    )
    .await?;
    tx.commit().await?;
    Ok(Attempt::Committed {
        live: info.state == VersionState::Live,
    })
}

fn reason_of(e: ApplyError) -> String {
    match e {
        ApplyError::Poison { reason, .. } => reason,
        other => describe(&other),
    }
}

fn apply_failure(e: ApplyError) -> Halt {
    Halt::Failed(match e {
        ApplyError::Postgres(pg) => ProjectionError::Postgres(pg),
        other => ProjectionError::Apply(describe(&other)),
    })
}

/// Moves commit `i` from the batch to the dead letters, with the original
/// bytes of its message.
fn take_poison<C: Committed>(prepared: &mut Prepared<C>, i: usize, reason: String) {
    let commit = prepared.commits.remove(i);
    let sequence = commit.stream_sequence();
    let (subject, payload) = prepared.originals.remove(&sequence).unwrap_or_default();
    prepared.poison.push(Poisoned {
        subject,
        stream_sequence: sequence,
        reason,
        payload,
    });
}
