//! The long-running roles wired together: the gateway, the projection
//! runners, and the shared shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use trackhrs_commands::CommandHandler;
use trackhrs_gateway::GatewayConfig;
use trackhrs_nats::EventStore;
use trackhrs_projections::directory::Directory;
use trackhrs_projections::{Runner, RunnerConfig};

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

/// Runs the directory projection until shutdown.
pub async fn run_projections(
    store: EventStore,
    pg: tokio_postgres::Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let runner = Runner::new(
        Directory,
        store,
        pg,
        RunnerConfig {
            // Organization events are rare and people wait for them (a
            // query with min_position): apply them promptly.
            batch_wait: Duration::from_millis(50),
            ..RunnerConfig::default()
        },
    );
    let outcome = runner.run(shutdown.wait()).await?;
    tracing::info!(?outcome, "directory projection stopped");
    Ok(())
}

/// Opens the gateway's state (credential schema, signing keys).
pub async fn open_gateway(
    store: EventStore,
    pg: tokio_postgres::Config,
    args: &GatewayArgs,
) -> anyhow::Result<std::sync::Arc<trackhrs_gateway::Core>> {
    let pool = trackhrs_gateway::pool(pg, args.pg_pool)?;
    let mut config = GatewayConfig::default();
    config.auth.access_ttl = Duration::from_secs(args.access_ttl_secs);
    trackhrs_gateway::open(CommandHandler::new(store), pool, config)
        .await
        .context("open the gateway (PostgreSQL credential store)")
}

/// Serves the gateway until shutdown.
pub async fn serve_gateway(
    core: std::sync::Arc<trackhrs_gateway::Core>,
    client: async_nats::Client,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let probe = move || client.connection_state() == async_nats::connection::State::Connected;
    trackhrs_gateway::serve(listener, core, probe, shutdown.wait()).await?;
    Ok(())
}
