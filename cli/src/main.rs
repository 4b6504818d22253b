//! `trackhrs`: one binary, one subcommand per role, so a laptop runs everything
//! in one process and production runs each role with as many replicas as needed.

mod agent;
mod bench;
mod bench_abuse;
mod bench_agent;
mod bench_floor;
mod bench_payroll;
mod bench_pipeline;
mod bench_query;
mod dev;
mod keys;
mod local;
mod ops;
mod platform;
mod simulate;
mod tail;
mod telemetry;

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
    /// Apply the credential schema (as its owner, the migration role), and
    /// grant the gateway's and the projections' roles their access to it.
    Migrate {
        #[command(flatten)]
        pg: platform::PgArgs,
        /// The gateway's role: reads and writes the credential tables.
        #[arg(long)]
        grant_gateway: Option<String>,
        /// The projections' role: may only revoke tokens.
        #[arg(long)]
        grant_projections: Option<String>,
    },
    /// Run the gRPC gateway: identity, organization administration, agent
    /// sessions, health and reflection.
    Gateway {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
        #[command(flatten)]
        gateway: platform::GatewayArgs,
        #[command(flatten)]
        metrics: telemetry::MetricsArgs,
    },
    /// Run the desktop agent without a window: observe the X11 desktop,
    /// keep spans in a local outbox, upload them with a device token.
    Agent(agent::AgentArgs),
    /// Run or inspect the projections (PostgreSQL read models).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Erase a person (right to be forgotten): destroy their data key, so
    /// their personal data in every event reads as erased, record the
    /// erasure in the log (the read models drop their copies), and delete
    /// their credentials. Cannot be undone; safe to run again if it failed.
    ErasePerson {
        /// The organization.
        #[arg(long)]
        org: String,
        /// The person id.
        #[arg(long)]
        person: String,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
    },
    /// Rebuild a projection into a new version beside the live one, with
    /// progress; switch to it when it has caught up and drop the old one.
    Rebuild {
        /// The projection (`activity`).
        projection: String,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
    },
    /// Dead letters: events a projection could not apply.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Manage authentication: the access-token signing keys.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The key-encryption key that wraps every data key and signing key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
enum ProjectionsCommand {
    /// Run the projections until Ctrl-C.
    Run {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
        #[command(flatten)]
        metrics: telemetry::MetricsArgs,
    },
    /// Print every projection version: state, position, lag.
    Status {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print the dead letters as JSON lines.
    List {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Apply a projection's dead letters again (after a fix).
    Replay {
        /// The projection (`org_directory` or `activity`).
        projection: String,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// List the signing keys (ids and dates, never the secrets).
    Keys {
        #[command(flatten)]
        pg: platform::PgArgs,
        #[command(flatten)]
        kek: keys::KekArgs,
    },
    /// Add a signing key; it signs from now on, older keys still verify.
    RotateKey {
        #[command(flatten)]
        pg: platform::PgArgs,
        #[command(flatten)]
        kek: keys::KekArgs,
    },
    /// Retire a signing key: tokens it signed are refused from now on.
    RetireKey {
        /// The key id (see `trackhrs auth keys`).
        kid: String,
        #[command(flatten)]
        pg: platform::PgArgs,
        #[command(flatten)]
        kek: keys::KekArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new key-encryption key to FILE, readable by its owner only
    /// (never overwrites one).
    NewKek {
        /// Where to write it.
        file: std::path::PathBuf,
    },
    /// Wrap every data key and signing key under a new key-encryption key,
    /// while the platform runs: the new key goes first in the key file
    /// (running processes re-read it), everything is wrapped again, then
    /// the old key is set aside beside the file, for older backups.
    RotateKek {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        pg: platform::PgArgs,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Event-store throughput and aggregate load latency.
    Store(bench::StoreBenchArgs),
    /// The activity pipeline: gRPC ingest, projection apply, rebuild.
    Pipeline(bench_pipeline::PipelineBenchArgs),
    /// The desktop agent: outbox throughput, and the headless agent's CPU
    /// and memory on an Xvfb desktop.
    Agent(bench_agent::AgentBenchArgs),
    /// The portal's dashboard reads over gRPC: cached under load, uncached.
    Query(bench_query::QueryBenchArgs),
    /// A payroll run for many members: drafting it, rebuilding its read
    /// model.
    Payroll(bench_payroll::PayrollBenchArgs),
    /// An agent's uploads alone, during a storm of wrong passwords, and
    /// while another device floods.
    Abuse(bench_abuse::AbuseBenchArgs),
}

/// Where NATS is and how the event store is laid out.
#[derive(clap::Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "TRACKHRS_NATS_URL", default_value_t = local::nats_url())]
    pub nats_url: String,
    /// How it authenticates and secures the connection.
    #[command(flatten)]
    pub auth: NatsAuth,
    /// The key-encryption key (not needed by `provision`).
    #[command(flatten)]
    pub kek: keys::KekArgs,
    /// Replicas of every stream (3 on a cluster).
    #[arg(long, env = "TRACKHRS_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Most appends committed together as one atomic batch. Pays off with
    /// `sync_interval: always` (the production setting); 1 turns it off, which
    /// is faster on a server with the default fsync (see benches/results.md).
    #[arg(long, env = "TRACKHRS_GROUP_COMMIT_MAX", default_value_t = 100)]
    pub group_commit_max: usize,
}

/// How every subcommand authenticates to NATS and secures the connection.
#[derive(clap::Args, Clone, Default)]
pub struct NatsAuth {
    /// NATS user (the application user of infra/nats/accounts.conf).
    #[arg(long, env = "TRACKHRS_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "TRACKHRS_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A NATS credentials file (a user JWT and its NKey seed).
    #[arg(long, env = "TRACKHRS_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to trust for NATS servers; TLS is then
    /// required (also with `tls://` URLs, which trust the system's roots).
    #[arg(long, env = "TRACKHRS_NATS_CA")]
    pub nats_ca: Option<std::path::PathBuf>,
}

impl NatsAuth {
    /// Connects to the comma-separated servers `urls`.
    pub async fn connect(&self, urls: &str) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name("trackhrs");
        match (&self.nats_user, &self.nats_password, &self.nats_creds) {
            (Some(user), Some(password), None) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            (None, None, Some(creds)) => {
                options = options
                    .credentials_file(creds)
                    .await
                    .with_context(|| format!("--nats-creds: cannot read {}", creds.display()))?;
            }
            (None, None, None) => {}
            _ => anyhow::bail!(
                "NATS: give a user with its password (--nats-user, --nats-password), or a credentials file (--nats-creds), not both"
            ),
        }
        if let Some(ca) = &self.nats_ca {
            anyhow::ensure!(ca.is_file(), "--nats-ca: no file {}", ca.display());
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let addrs = urls
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("invalid NATS URL")?;
        options
            .connect(addrs)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {urls}: {e}"))
    }
}

impl NatsArgs {
    /// Connects to NATS.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.auth.connect(&self.nats_url).await
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
    // PostgreSQL's NOTICEs ("relation ... already exists, skipping") are
    // logged by tokio-postgres at INFO: the filter holds it at WARN.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,async_nats=warn".into());
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(trackhrs_platform::log_filter(&spec)),
        )
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().role {
        Role::Dev(args) => dev::run(args).await,
        Role::Agent(args) => agent::run(args).await,
        Role::Provision(nats) => {
            let client = nats.connect().await?;
            trackhrs_platform::provision(&client, &nats.store_config()).await?;
            tracing::info!("streams and buckets are provisioned");
            Ok(())
        }
        Role::Migrate {
            pg,
            grant_gateway,
            grant_projections,
        } => {
            let pool = trackhrs_app::pg_pool(pg.config()?, 1)?;
            trackhrs_credentials::migrate(&pool).await?;
            trackhrs_credentials::grant(
                &pool,
                &trackhrs_credentials::Grants {
                    gateway: grant_gateway,
                    projections: grant_projections,
                },
            )
            .await?;
            tracing::info!("the credential schema is applied");
            Ok(())
        }
        Role::Gateway {
            nats,
            pg,
            gateway,
            metrics,
        } => {
            telemetry::serve_metrics(&metrics).await?;
            let store = open_store(&nats).await?;
            let settings = platform::settings(&gateway, trackhrs_platform::ReadModels::None)?;
            let assembled =
                trackhrs_platform::Platform::build(store, pg.config()?, settings).await?;
            assembled
                .run(platform::Shutdown::on_signal().wait())
                .await?;
            Ok(())
        }
        Role::Projections {
            command: ProjectionsCommand::Run { nats, pg, metrics },
        } => {
            telemetry::serve_metrics(&metrics).await?;
            let store = open_store(&nats).await?;
            let settings = trackhrs_platform::Settings {
                pg_pool: 2,
                read_models: trackhrs_platform::ReadModels::All,
                ..Default::default()
            };
            let assembled =
                trackhrs_platform::Platform::build(store, pg.config()?, settings).await?;
            assembled
                .run(platform::Shutdown::on_signal().wait())
                .await?;
            Ok(())
        }
        Role::Projections {
            command: ProjectionsCommand::Status { nats, pg },
        } => {
            let store = open_store(&nats).await?;
            projections_status(&store, &pg).await
        }
        Role::Auth { command } => auth_command(command).await,
        Role::Keys {
            command: KeysCommand::NewKek { file },
        } => {
            let id = keys::new_kek(&file)?;
            let mut out = std::io::stdout().lock();
            use std::io::Write as _;
            writeln!(
                out,
                "wrote key-encryption key {id} to {}; give it to every role with TRACKHRS_KEK_FILE",
                file.display()
            )?;
            Ok(())
        }
        Role::Keys {
            command: KeysCommand::RotateKek { nats, pg },
        } => {
            let done = keys::rotate_kek(&nats, &pg).await?;
            let mut out = std::io::stdout().lock();
            use std::io::Write as _;
            writeln!(
                out,
                "key-encryption key {} replaced {}: {} data keys and {} signing keys wrapped again.\n\
                 The old key is in {}: backups taken before now need it; keep it offline with them, or delete it.",
                done.new,
                done.old,
                done.data_keys,
                done.signing_keys,
                done.retired.display()
            )?;
            Ok(())
        }
        Role::Rebuild {
            projection,
            nats,
            pg,
        } => ops::rebuild(open_store(&nats).await?, pg.config()?, &projection).await,
        Role::Dlq {
            command: DlqCommand::List { projection, nats },
        } => ops::dlq_list(&open_store(&nats).await?, projection.as_deref()).await,
        Role::Dlq {
            command:
                DlqCommand::Replay {
                    projection,
                    nats,
                    pg,
                },
        } => ops::dlq_replay(&open_store(&nats).await?, pg.config()?, &projection).await,
        Role::ErasePerson {
            org,
            person,
            nats,
            pg,
        } => {
            let org_id = trackhrs_domain::Token::new(&org).context("invalid org id")?;
            let person_id = trackhrs_domain::Token::new(&person).context("invalid person id")?;
            let app = trackhrs_app::App::open(
                open_store(&nats).await?,
                trackhrs_app::pg_pool(pg.config()?, 2)?,
                Default::default(),
            )
            .await?;
            let rows = app.erase_person(&org_id, &person_id).await?;
            let mut out = std::io::stdout().lock();
            use std::io::Write as _;
            writeln!(
                out,
                "erased {person}: data key destroyed, erasure recorded in the log (the read models drop their copies), {rows} credential rows deleted"
            )?;
            Ok(())
        }
        Role::Events {
            command: EventsCommand::Tail(args),
        } => tail::run(args).await,
        Role::Bench {
            command: BenchCommand::Store(args),
        } => bench::run_store(args).await,
        Role::Bench {
            command: BenchCommand::Pipeline(args),
        } => bench_pipeline::run_pipeline(args).await,
        Role::Bench {
            command: BenchCommand::Query(args),
        } => bench_query::run_query(args).await,
        Role::Bench {
            command: BenchCommand::Agent(args),
        } => bench_agent::run_agent(args).await,
        Role::Bench {
            command: BenchCommand::Payroll(args),
        } => bench_payroll::run_payroll(args).await,
        Role::Bench {
            command: BenchCommand::Abuse(args),
        } => bench_abuse::run_abuse(args).await,
    }
}

/// Connects to NATS and opens the event store, which `trackhrs provision`
/// created: a running role creates and changes no stream. Refuses to start
/// without the key-encryption key, saying what to set.
async fn open_store(nats: &NatsArgs) -> anyhow::Result<trackhrs_nats::EventStore> {
    let config = StoreConfig {
        kek: Some(nats.kek.keyring()?),
        ..nats.store_config()
    };
    let client = nats.connect().await?;
    Ok(trackhrs_nats::EventStore::open(client, config).await?)
}

async fn projections_status(
    store: &trackhrs_nats::EventStore,
    pg: &platform::PgArgs,
) -> anyhow::Result<()> {
    let client = platform::pg_connect(&pg.config()?).await?;
    let rows = trackhrs_projections::status(&client, store).await?;
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    writeln!(
        out,
        "{:<20} {:>7} {:<9} {:>12} {:>12} {:>10}",
        "PROJECTION", "VERSION", "STATE", "POSITION", "STREAM", "LAG"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<20} {:>7} {:<9} {:>12} {:>12} {:>10}",
            row.info.name,
            row.info.version,
            row.info.state.as_str(),
            row.info.position,
            row.stream_last_sequence,
            row.lag
        )?;
    }
    Ok(())
}

async fn auth_command(command: AuthCommand) -> anyhow::Result<()> {
    let (pg, kek) = match &command {
        AuthCommand::Keys { pg, kek }
        | AuthCommand::RotateKey { pg, kek }
        | AuthCommand::RetireKey { pg, kek, .. } => (pg, kek),
    };
    let pool = trackhrs_app::pg_pool(pg.config()?, 2)?;
    let auth = trackhrs_credentials::Auth::open(pool, Default::default(), kek.keyring()?).await?;
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    match command {
        AuthCommand::Keys { .. } => {
            for key in auth.keys().list().await? {
                let state = match key.retired_at {
                    Some(at) => format!("retired at {at}"),
                    None => "active".into(),
                };
                writeln!(out, "{}  created at {}  {state}", key.kid, key.created_at)?;
            }
        }
        AuthCommand::RotateKey { .. } => {
            let kid = auth.keys().rotate().await?;
            writeln!(
                out,
                "new signing key {kid}; gateways sign with it within 30 s"
            )?;
        }
        AuthCommand::RetireKey { kid, .. } => {
            if auth.keys().retire(&kid).await? {
                writeln!(
                    out,
                    "retired {kid}; tokens it signed are refused within 30 s"
                )?;
            } else {
                anyhow::bail!("no active signing key {kid}");
            }
        }
    }
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
