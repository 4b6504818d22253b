//! The long-running roles wired together: the gateway, the projection
//! runners, and the shared shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use trackhrs_app::policy::Revocation;
use trackhrs_app::{App, AppConfig};
use trackhrs_nats::EventStore;
use trackhrs_projections::activity::Activity;
use trackhrs_projections::directory::Directory;
use trackhrs_projections::timeline::Timeline;
use trackhrs_projections::{RunnerConfig, Supervise, Supervisor};

/// Where PostgreSQL is.
#[derive(clap::Args, Clone)]
pub struct PgArgs {
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(long, env = "TRACKHRS_DATABASE_URL", default_value_t = crate::local::database_url())]
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

/// How the activity and timeline projections batch: up to 100 commits or
/// 1 s. Commits of uploads carry many spans each, so a batch is thousands of
/// events.
pub fn activity_config() -> RunnerConfig {
    RunnerConfig {
        batch_max: 100,
        batch_wait: Duration::from_millis(1000),
        ..RunnerConfig::default()
    }
}

/// Every read model and policy the projections role runs, each under its
/// supervisor (versions, rebuilds, dead-letter replays). A new read model is
/// added here, and nowhere else.
pub fn read_models(store: &EventStore, pg: &tokio_postgres::Config) -> Vec<Box<dyn Supervise>> {
    // Organization events are rare and people wait for them (a query with
    // min_position, a revocation): apply them promptly.
    let prompt = RunnerConfig {
        batch_wait: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let policy_store = store.clone();
    vec![
        Box::new(Supervisor::new(
            Directory::new,
            store.clone(),
            pg.clone(),
            prompt.clone(),
        )),
        Box::new(Supervisor::new(
            move |version| Revocation::new(policy_store.clone(), version),
            store.clone(),
            pg.clone(),
            prompt,
        )),
        Box::new(Supervisor::new(
            Activity::new,
            store.clone(),
            pg.clone(),
            activity_config(),
        )),
        Box::new(Supervisor::new(
            Timeline::new,
            store.clone(),
            pg.clone(),
            activity_config(),
        )),
    ]
}

/// The read model or policy called `name`.
pub fn read_model(
    store: &EventStore,
    pg: &tokio_postgres::Config,
    name: &str,
) -> anyhow::Result<Box<dyn Supervise>> {
    let all = read_models(store, pg);
    let names: Vec<String> = all.iter().map(|r| r.name()).collect();
    all.into_iter().find(|r| r.name() == name).with_context(|| {
        format!(
            "unknown projection {name}; the projections are {}",
            names.join(", ")
        )
    })
}

/// Runs every read model and policy until shutdown.
pub async fn run_projections(
    store: EventStore,
    pg: tokio_postgres::Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let tasks: Vec<_> = read_models(&store, &pg)
        .into_iter()
        .map(|supervisor| {
            let name = supervisor.name();
            let stop = shutdown.clone();
            (name, tokio::spawn(supervisor.run(Box::pin(stop.wait()))))
        })
        .collect();
    for (name, task) in tasks {
        task.await??;
        tracing::info!(projection = name, "stopped");
    }
    Ok(())
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
