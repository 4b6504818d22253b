//! `trackhrs`: one binary, one subcommand per role, so a laptop runs everything
//! in one process and production runs each role with as many replicas as needed.

mod bench;
mod dev;
mod tail;

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trackhrs_nats::StoreConfig;

/// mimalloc instead of glibc's malloc: the hot paths allocate from many tokio
/// worker threads at once, and glibc's arena locks showed up as contention in
/// profiles of the append path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TrackHrs: time tracking and activity intelligence, event-sourced on NATS JetStream.
#[derive(Parser)]
#[command(name = "trackhrs", version)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run every role in one process, with its own nats-server and PostgreSQL
    /// under the data folder (unless URLs are configured) and a demo org.
    Dev(dev::DevArgs),
    /// Create or update the JetStream streams and buckets, then exit.
    Provision(NatsArgs),
    /// Run the gRPC gateway (health and reflection today).
    Gateway {
        #[command(flatten)]
        nats: NatsArgs,
        /// Address the gateway listens on.
        #[arg(long, env = "TRACKHRS_GATEWAY_ADDR", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// Read the event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Benchmarks against real servers started for the run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print stored commits as JSON lines, decoded, personal data opened or shown erased.
    Tail(tail::TailArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Event-store throughput and aggregate load latency.
    Store(bench::StoreBenchArgs),
}

/// Where NATS is and how the event store is laid out.
#[derive(clap::Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "TRACKHRS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS user (the application user of infra/nats/accounts.conf).
    #[arg(long, env = "TRACKHRS_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "TRACKHRS_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Replicas of every stream (3 on a cluster).
    #[arg(long, env = "TRACKHRS_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Most appends committed together as one atomic batch. Pays off with
    /// `sync_interval: always` (the production setting); 1 turns it off, which
    /// is faster on a server with the default fsync (see benches/results.md).
    #[arg(long, env = "TRACKHRS_GROUP_COMMIT_MAX", default_value_t = 100)]
    pub group_commit_max: usize,
}

impl NatsArgs {
    /// Connects to NATS.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name("trackhrs");
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let addrs = self
            .nats_url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("invalid NATS URL")?;
        options
            .connect(addrs)
            .await
            .with_context(|| format!("cannot connect to NATS at {}", self.nats_url))
    }

    /// The store configuration these arguments select.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            replicas: self.replicas,
            group_commit_max: self.group_commit_max,
            ..Default::default()
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().role {
        Role::Dev(args) => dev::run(args).await,
        Role::Provision(nats) => {
            let client = nats.connect().await?;
            trackhrs_nats::provision(&client, &nats.store_config()).await?;
            tracing::info!("streams and buckets are provisioned");
            Ok(())
        }
        Role::Gateway { nats, listen } => {
            let client = nats.connect().await?;
            trackhrs_nats::provision(&client, &nats.store_config()).await?;
            run_gateway(client, listen, shutdown_signal()).await
        }
        Role::Events {
            command: EventsCommand::Tail(args),
        } => tail::run(args).await,
        Role::Bench {
            command: BenchCommand::Store(args),
        } => bench::run_store(args).await,
    }
}

/// Serves the gateway until `shutdown`.
pub async fn run_gateway(
    client: async_nats::Client,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let probe = move || client.connection_state() == async_nats::connection::State::Connected;
    trackhrs_gateway::serve(listener, probe, shutdown).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
