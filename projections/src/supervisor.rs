//! The supervisor: runs a read model in versions, without downtime.
//!
//! The live version serves queries and follows the log. When it was built
//! by other code (a lower [`Projection::code_version`]: a classifier
//! upgrade, a fixed bug), the next version is built beside it from the
//! start of the log (or a version this code was building when it stopped is
//! resumed), takes over in one transaction when it has caught up, and the
//! old version is dropped after a grace period for queries that started on
//! it. A live version built by newer code (a rolling deploy) is served as
//! it is. [`Supervisor::rebuild`] builds the next version on an operator's
//! request the same way.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio_postgres::Client;
use trackhrs_nats::EventStore;

use crate::catalog::{self, VersionInfo, VersionState};
use crate::dlq::ReplayReport;
use crate::error::ProjectionError;
use crate::projection::Projection;
use crate::runner::{AbortOnDrop, RunOutcome, Runner, RunnerConfig};

/// Time a replaced version keeps its tables after the switch, for queries
/// that started on it.
pub const DROP_GRACE: Duration = Duration::from_secs(5);

/// A shutdown signal every runner of the supervisor waits for.
type Stop = Shared<BoxFuture<'static, ()>>;

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The version being built.
    pub version: u32,
    /// Its checkpoint.
    pub position: u64,
    /// The stream's last sequence.
    pub last: u64,
}

/// A finished rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The version that went live.
    pub version: u32,
    /// Events it applied while catching up.
    pub events: u64,
    /// The version it replaced (dropped), if one was live.
    pub replaced: Option<u32>,
}

/// Runs the versions of one read model: `make(version)` is the projection
/// at a catalog version.
pub struct Supervisor<F> {
    make: F,
    store: EventStore,
    pg: tokio_postgres::Config,
    config: RunnerConfig,
    drop_grace: Duration,
}

impl<P, F> Supervisor<F>
where
    P: Projection,
    F: Fn(u32) -> P + Send + Sync + 'static,
{
    /// A supervisor running versions made by `make` with `config` (its
    /// `promote_when_caught_up` is set per runner).
    pub fn new(
        make: F,
        store: EventStore,
        pg: tokio_postgres::Config,
        config: RunnerConfig,
    ) -> Self {
        Self {
            make,
            store,
            pg,
            config,
            drop_grace: DROP_GRACE,
        }
    }

    /// Sets how long a replaced version keeps its tables.
    pub fn with_drop_grace(mut self, grace: Duration) -> Self {
        self.drop_grace = grace;
        self
    }

    /// The read model's name.
    pub fn name(&self) -> String {
        (self.make)(1).name().to_owned()
    }

    fn code_version(&self) -> u64 {
        (self.make)(1).code_version()
    }

    fn runner(&self, version: u32, promote: bool) -> Runner<P> {
        Runner::new(
            (self.make)(version),
            self.store.clone(),
            self.pg.clone(),
            RunnerConfig {
                promote_when_caught_up: promote,
                ..self.config.clone()
            },
        )
    }

    async fn connect(&self) -> Result<Client, ProjectionError> {
        let mut client = crate::postgres::connect(&self.pg).await?;
        catalog::migrate(&mut client).await?;
        Ok(client)
    }

    /// The live version and every registered version of this read model.
    async fn versions(
        &self,
        pg: &Client,
    ) -> Result<(Option<VersionInfo>, Vec<VersionInfo>), ProjectionError> {
        let all = catalog::versions_of(pg, &self.name()).await?;
        let live = all.iter().find(|i| i.state == VersionState::Live).cloned();
        Ok((live, all))
    }

    /// Drops `version` after the grace period (at once when `stop` fires
    /// first: nothing is served any more).
    async fn drop_version(&self, version: u32, stop: &Stop) -> Result<(), ProjectionError> {
        tokio::select! {
            () = stop.clone() => {}
            () = tokio::time::sleep(self.drop_grace) => {}
        }
        let mut client = self.connect().await?;
        catalog::drop_version(&mut client, &self.store, &self.name(), version).await?;
        tracing::info!(
            projection = self.name(),
            version,
            "dropped the replaced version"
        );
        Ok(())
    }

    /// Runs the read model until `shutdown` completes (see the module
    /// documentation). A server that is unreachable for a while (NATS,
    /// PostgreSQL) is waited for with backoff; only an error that retrying
    /// cannot cure (a definition or catalog problem) ends it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProjectionError> {
        let stop: Stop = shutdown.boxed().shared();
        let name = self.name();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.supervise(&stop).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    tracing::warn!(projection = name, error = %e, "supervisor failed; retrying");
                    tokio::select! {
                        () = stop.clone() => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "supervisor stopped");
                    return Err(e);
                }
            }
        }
    }

    /// One supervision until shutdown or an error.
    async fn supervise(&self, stop: &Stop) -> Result<(), ProjectionError> {
        let name = self.name();
        let code = self.code_version();
        loop {
            let mut client = self.connect().await?;
            let (live, all) = self.versions(&client).await?;
            let version = live.as_ref().map_or(1, |l| l.version);
            let mut rebuild = None;
            if let Some(live) = &live {
                let built = match live.code_version {
                    Some(built) => built,
                    // Registered before the catalog recorded code versions:
                    // taken as built by the code that first runs it now.
                    None => {
                        catalog::set_code_version(&mut client, &name, live.version, code).await?;
                        code
                    }
                };
                if built < code {
                    let resumed = all
                        .iter()
                        .find(|i| i.state == VersionState::Building && i.code_version == Some(code))
                        .map(|i| i.version);
                    let highest = all.iter().map(|i| i.version).max().unwrap_or(0);
                    let target = resumed.unwrap_or(highest + 1);
                    tracing::info!(
                        projection = name,
                        built,
                        code,
                        target,
                        "the live version was built by older code: building the next one beside it"
                    );
                    rebuild = Some(AbortOnDrop(tokio::spawn(
                        self.runner(target, true).run(stop.clone()),
                    )));
                } else if built > code {
                    tracing::warn!(
                        projection = name,
                        built,
                        code,
                        "the live version was built by newer code; serving it as it is"
                    );
                }
            }
            drop(client);
            let live_run = self.runner(version, false).run(stop.clone());
            let outcome = match rebuild {
                None => live_run.await?,
                Some(mut task) => {
                    // The rebuild must not fail unseen: its end (an error, or
                    // a shutdown) ends this supervision too.
                    let outcome = tokio::select! {
                        outcome = live_run => outcome?,
                        ended = &mut task.0 => {
                            ended.map_err(|e| ProjectionError::Task(e.to_string()))??;
                            return Ok(());
                        }
                    };
                    if outcome != RunOutcome::Shutdown {
                        // The rebuilt version went live: the old one goes
                        // after the grace period, and the new one is
                        // followed as the live one from here on.
                        self.drop_version(version, stop).await?;
                        match (&mut task.0)
                            .await
                            .map_err(|e| ProjectionError::Task(e.to_string()))??
                        {
                            RunOutcome::Shutdown => return Ok(()),
                            RunOutcome::Retired | RunOutcome::Dropped => {}
                        }
                    }
                    outcome
                }
            };
            match outcome {
                RunOutcome::Shutdown => return Ok(()),
                RunOutcome::Retired | RunOutcome::Dropped => {
                    tracing::info!(
                        projection = name,
                        version,
                        "version retired; following the live one"
                    );
                }
            }
        }
    }

    /// Builds the next version from the start of the log beside the live
    /// one, switches to it when it has caught up, and drops the old one;
    /// `progress` hears how far it has come about four times a second.
    pub async fn rebuild(
        &self,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<Rebuilt, ProjectionError> {
        let name = self.name();
        let client = self.connect().await?;
        let (live, all) = self.versions(&client).await?;
        let next = all.iter().map(|i| i.version).max().unwrap_or(0) + 1;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Catching up on the whole log: larger batches, applied at once.
        let runner = Runner::new(
            (self.make)(next),
            self.store.clone(),
            self.pg.clone(),
            RunnerConfig {
                batch_max: self.config.batch_max.max(500),
                batch_wait: Duration::from_millis(200),
                promote_when_caught_up: true,
                ..self.config.clone()
            },
        );
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let events = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if task.is_finished() {
                task.await
                    .map_err(|e| ProjectionError::Task(e.to_string()))??;
                return Err(ProjectionError::Catalog(format!(
                    "the rebuild of {name} v{next} stopped before it went live"
                )));
            }
            let Some(info) = catalog::version_info(&client, &name, next).await? else {
                continue;
            };
            let last = self
                .store
                .last_sequence()
                .await
                .map_err(|e| ProjectionError::Nats(e.to_string()))?;
            progress(Progress {
                version: next,
                position: info.position,
                last,
            });
            if info.state == VersionState::Live {
                break info.events_applied;
            }
        };
        let _ = stop.send(());
        task.await
            .map_err(|e| ProjectionError::Task(e.to_string()))??;
        let replaced = live.map(|l| l.version);
        if let Some(old) = replaced {
            let never: Stop = futures::future::pending::<()>().boxed().shared();
            self.drop_version(old, &never).await?;
        }
        Ok(Rebuilt {
            version: next,
            events,
            replaced,
        })
    }
}

impl<P, F> Supervisor<F>
where
    P: Projection,
    F: Fn(u32) -> P + Send + Sync + 'static,
{
    /// Applies the dead letters of the live version again (after a fix);
    /// those that apply leave the dead-letter stream.
    pub async fn replay_dead_letters(&self) -> Result<ReplayReport, ProjectionError> {
        let mut client = self.connect().await?;
        let (live, _) = self.versions(&client).await?;
        let live = live.ok_or_else(|| ProjectionError::UnknownVersion {
            name: self.name(),
            version: 0,
        })?;
        crate::dlq::replay_dead_letters(&mut client, &self.store, &(self.make)(live.version)).await
    }
}

/// A supervisor of any read model, so that one list holds them all (the
/// projections role runs the list; `rebuild` and dead-letter replays find a
/// read model in it by name).
pub trait Supervise: Send + Sync {
    /// The read model's name.
    fn name(&self) -> String;

    /// [`Supervisor::run`].
    fn run(
        self: Box<Self>,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), ProjectionError>>;

    /// [`Supervisor::rebuild`].
    fn rebuild<'a>(
        &'a self,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<Rebuilt, ProjectionError>>;

    /// [`Supervisor::replay_dead_letters`].
    fn replay_dead_letters(&self) -> BoxFuture<'_, Result<ReplayReport, ProjectionError>>;
}

impl<P, F> Supervise for Supervisor<F>
where
    P: Projection,
    F: Fn(u32) -> P + Send + Sync + 'static,
{
    fn name(&self) -> String {
        Supervisor::name(self)
    }

    fn run(
        self: Box<Self>,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), ProjectionError>> {
        Supervisor::run(*self, shutdown).boxed()
    }

    fn rebuild<'a>(
        &'a self,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<Rebuilt, ProjectionError>> {
        Supervisor::rebuild(self, progress).boxed()
    }

    fn replay_dead_letters(&self) -> BoxFuture<'_, Result<ReplayReport, ProjectionError>> {
        Supervisor::replay_dead_letters(self).boxed()
    }
}
