//! The long-running roles wired together: the gateway, the projection
//! runners, and the shared shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use trackhrs_app::policy::Revocation;
use trackhrs_app::{App, AppConfig};
use trackhrs_nats::EventStore;
use trackhrs_projections::activity::{self, Activity};
use trackhrs_projections::directory::Directory;
use trackhrs_projections::timeline::Timeline;
use trackhrs_projections::{RunOutcome, Runner, RunnerConfig, VersionInfo, VersionState};

/// Where PostgreSQL is.
#[derive(clap::Args, Clone)]
pub struct PgArgs {
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(
        long,
        env = "TRACKHRS_DATABASE_URL",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=trackhrs"
    )]
    pub database_url: String,
}

impl PgArgs {
    /// The parsed connection settings.
    pub fn config(&self) -> anyhow::Result<tokio_postgres::Config> {
        self.database_url
            .parse()
            .context("invalid PostgreSQL connection string")
    }
}

/// Settings of the gateway role.
#[derive(clap::Args, Clone)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "TRACKHRS_GATEWAY_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "TRACKHRS_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,
    /// PostgreSQL connections of the gateway.
    #[arg(long, env = "TRACKHRS_GATEWAY_PG_POOL", default_value_t = 16)]
    pub pg_pool: usize,
}

/// A shutdown signal that many tasks can wait for.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A signal fired by Ctrl-C or SIGTERM.
    pub fn on_signal() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Completes when the signal fires.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Connects to PostgreSQL with the catalog migrated.
pub async fn pg_connect(pg: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (mut client, conn) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to PostgreSQL")?;
    tokio::spawn(conn);
    trackhrs_projections::migrate(&mut client).await?;
    Ok(client)
}

/// The live version of a projection and the highest registered one.
pub async fn versions(
    pg: &tokio_postgres::Client,
    store: &EventStore,
    name: &str,
) -> anyhow::Result<(Option<VersionInfo>, u32)> {
    let all: Vec<VersionInfo> = trackhrs_projections::status(pg, store)
        .await?
        .into_iter()
        .map(|s| s.info)
        .filter(|i| i.name == name)
        .collect();
    let highest = all.iter().map(|i| i.version).max().unwrap_or(0);
    let live = all.into_iter().find(|i| i.state == VersionState::Live);
    Ok((live, highest))
}

/// Runs every projection until shutdown: the organization directory, the
/// activity read model and the raw timelines; and the revocation policy.
pub async fn run_projections(
    store: EventStore,
    pg: tokio_postgres::Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Organization events are rare and people wait for them (a query with
    // min_position, a revocation): apply them promptly.
    let prompt = RunnerConfig {
        batch_wait: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let directory = Runner::new(Directory, store.clone(), pg.clone(), prompt.clone());
    let directory = tokio::spawn(directory.run(shutdown.clone().wait()));
    let revocation = Runner::new(
        Revocation::new(store.clone()),
        store.clone(),
        pg.clone(),
        prompt,
    );
    let revocation = tokio::spawn(revocation.run(shutdown.clone().wait()));
    // Raw timelines: like the spans, many events per commit.
    let timeline = Runner::new(Timeline, store.clone(), pg.clone(), activity_config(false));
    let timeline = tokio::spawn(timeline.run(shutdown.clone().wait()));
    run_activity(store, pg, shutdown).await?;
    let outcome = directory.await??;
    tracing::info!(?outcome, "directory projection stopped");
    let outcome = revocation.await??;
    tracing::info!(?outcome, "revocation policy stopped");
    let outcome = timeline.await??;
    tracing::info!(?outcome, "timeline projection stopped");
    Ok(())
}

/// How the activity projection batches: up to 100 commits or 1 s. Commits
/// of uploads carry many spans each, so a batch is thousands of events.
pub fn activity_config(promote_when_caught_up: bool) -> RunnerConfig {
    RunnerConfig {
        batch_max: 100,
        batch_wait: Duration::from_millis(1000),
        promote_when_caught_up,
        ..RunnerConfig::default()
    }
}

/// Time a replaced version keeps its tables after the switch, for queries
/// that started on it.
pub const DROP_GRACE: Duration = Duration::from_secs(5);

/// Runs the live version of the activity projection (version 1 on a new
/// database). When the live version was built by older code (schema or
/// classifier version), the next version is built beside it, or a building
/// one of this code resumed, and takes over when it has caught up; the old
/// version keeps serving (and applying new events) until then and is dropped
/// after the switch. A live version built by newer code (a rolling deploy)
/// is served as it is.
async fn run_activity(
    store: EventStore,
    pg: tokio_postgres::Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut rebuild = None;
    loop {
        let client = pg_connect(&pg).await?;
        let (live, highest) = versions(&client, &store, activity::NAME).await?;
        let version = live.as_ref().map_or(1, |l| l.version);
        if let Some(live) = &live
            && rebuild.is_none()
        {
            let built = activity::built_with(&client, &live.schema).await?;
            if built < activity::code_version() {
                let target = match building_of_this_code(&client, &store).await? {
                    Some(v) => v,
                    None => highest + 1,
                };
                tracing::info!(
                    ?built,
                    now = ?activity::code_version(),
                    target,
                    "the activity read model was built by older code: building the next version beside it"
                );
                let runner = Runner::new(
                    Activity::new(target),
                    store.clone(),
                    pg.clone(),
                    activity_config(true),
                );
                rebuild = Some((
                    tokio::spawn(runner.run(shutdown.clone().wait())),
                    live.version,
                ));
            } else if built > activity::code_version() {
                tracing::warn!(
                    ?built,
                    "the live activity read model was built by newer code; serving it as it is"
                );
            }
        }
        drop(client);
        let runner = Runner::new(
            Activity::new(version),
            store.clone(),
            pg.clone(),
            activity_config(false),
        );
        match runner.run(shutdown.clone().wait()).await? {
            RunOutcome::Shutdown => break,
            RunOutcome::Retired | RunOutcome::Dropped => {
                tracing::info!(version, "activity version retired; following the live one");
                if let Some((task, old)) = rebuild.take() {
                    // The rebuilt version went live and keeps running in
                    // `task`; the old one goes after the grace period.
                    tokio::time::sleep(DROP_GRACE).await;
                    let mut client = pg_connect(&pg).await?;
                    trackhrs_projections::drop_version(&mut client, &store, activity::NAME, old)
                        .await?;
                    tracing::info!(old, "dropped the replaced activity version");
                    task.await??;
                    return Ok(());
                }
            }
        }
    }
    if let Some((task, _)) = rebuild {
        task.await??;
    }
    Ok(())
}

/// A version being built by this code (left by a restart during a rebuild),
/// to resume rather than start another.
async fn building_of_this_code(
    pg: &tokio_postgres::Client,
    store: &EventStore,
) -> anyhow::Result<Option<u32>> {
    for status in trackhrs_projections::status(pg, store).await? {
        let info = status.info;
        if info.name == activity::NAME
            && info.state == VersionState::Building
            && activity::built_with(pg, &info.schema).await? == activity::code_version()
        {
            return Ok(Some(info.version));
        }
    }
    Ok(None)
}

/// Opens the application layer (credential schema, signing keys).
pub async fn open_app(
    store: EventStore,
    pg: tokio_postgres::Config,
    args: &GatewayArgs,
) -> anyhow::Result<Arc<App>> {
    let pool = trackhrs_app::pg_pool(pg, args.pg_pool)?;
    let mut config = AppConfig::default();
    config.auth.access_ttl = Duration::from_secs(args.access_ttl_secs);
    let app = App::open(store, pool, config)
        .await
        .context("open the application (PostgreSQL credential store)")?;
    Ok(Arc::new(app))
}

/// Serves the gateway until shutdown.
pub async fn serve_gateway(
    app: Arc<App>,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    trackhrs_gateway::serve(listener, app, shutdown.wait()).await?;
    Ok(())
}
