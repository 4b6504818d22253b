//! `trackhrs dev`: the whole platform in one process on a laptop, with its own
//! nats-server and PostgreSQL under the data folder and a demo organization.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, Organization, Role};
use trackhrs_harness::pg::Durability;
use trackhrs_harness::{NatsOptions, NatsServer, PgServer};
use trackhrs_nats::{CommitMeta, EventStore, StoreConfig};

/// Arguments of `dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Folder for the embedded servers' data.
    #[arg(long, env = "TRACKHRS_DATA_DIR", default_value = ".trackhrs")]
    data_dir: PathBuf,
    /// Use this NATS server instead of starting one.
    #[arg(long, env = "TRACKHRS_NATS_URL")]
    nats_url: Option<String>,
    /// Use this PostgreSQL database instead of starting a server.
    #[arg(long, env = "TRACKHRS_DATABASE_URL")]
    database_url: Option<String>,
    /// Port of the embedded nats-server.
    #[arg(long, env = "TRACKHRS_DEV_NATS_PORT", default_value_t = 14222)]
    nats_port: u16,
    /// Port of the embedded PostgreSQL.
    #[arg(long, env = "TRACKHRS_DEV_PG_PORT", default_value_t = 15432)]
    pg_port: u16,
    /// Address the gateway listens on.
    #[arg(long, env = "TRACKHRS_GATEWAY_ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Start, provision and seed, then stop (a smoke test of the set-up).
    #[arg(long)]
    once: bool,
}

/// Runs every role until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir)?;
    std::fs::create_dir_all(&data_dir)?;

    // Kept alive for the whole run: dropping them stops the servers.
    let mut _nats_server = None;
    let nats_url = match args.nats_url {
        Some(url) => url,
        None => {
            let server = NatsServer::start_with(NatsOptions {
                sync_always: true,
                store_dir: Some(data_dir.join("nats")),
                port: Some(args.nats_port),
                accounts: false,
            })
            .await
            .context("start the embedded nats-server")?;
            let url = server.url();
            _nats_server = Some(server);
            url
        }
    };
    let mut _pg_server = None;
    let database_url = match args.database_url {
        Some(url) => url,
        None => {
            let server =
                PgServer::start_in(&data_dir.join("pg/data"), args.pg_port, Durability::Durable)
                    .await
                    .context("start the embedded PostgreSQL")?;
            let admin = server.connection_string("postgres");
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = 'trackhrs'", &[])
                .await?
                .is_some();
            if !exists {
                client.batch_execute("CREATE DATABASE trackhrs").await?;
            }
            _pg_server = Some(server);
            PgServer::connection_string_for(args.pg_port, "trackhrs")
        }
    };
    let (pg, conn) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .context("connect to PostgreSQL")?;
    tokio::spawn(conn);
    pg.simple_query("SELECT 1").await?;

    let client = async_nats::connect(&nats_url)
        .await
        .context("connect to NATS")?;
    let config = StoreConfig::default();
    trackhrs_nats::provision(&client, &config).await?;
    let store = EventStore::open(client.clone(), config).await?;
    let commands = CommandHandler::new(store);
    seed_demo_org(&commands).await?;

    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    writeln!(out, "TrackHrs is running.")?;
    writeln!(out, "  NATS:        {nats_url}")?;
    writeln!(out, "  PostgreSQL:  {database_url}")?;
    writeln!(out, "  gRPC:        {} (health, reflection)", args.listen)?;
    writeln!(
        out,
        "  demo org:    acme (owner olive@acme.test, 5 members)"
    )?;
    writeln!(out, "Try:")?;
    writeln!(
        out,
        "  cargo run --bin trackhrs -- events tail --nats-url {nats_url}"
    )?;
    writeln!(out, "  grpcurl -plaintext {} list", args.listen)?;
    drop(out);
    if args.once {
        return Ok(());
    }
    crate::run_gateway(client, args.listen, crate::shutdown_signal()).await
}

/// Creates the demo organization. Fixed command ids make it idempotent: a
/// second run gets the original results and stores nothing new.
async fn seed_demo_org(commands: &CommandHandler) -> anyhow::Result<()> {
    let (org, id) = (Token::new("acme")?, Token::new("org")?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let meta = |id: &str| CommitMeta::new(id, "system:dev", now);
    let create = OrgCommand::Create {
        name: "Acme Corp".into(),
        owner: Token::new("olive")?,
        owner_email: "olive@acme.test".into(),
        owner_name: "Olive Owner".into(),
        seats: 10,
    };
    commands
        .execute::<Organization>(&org, &id, create, &meta("demo-create-org"))
        .await
        .context("seed the demo org")?;
    let people = [
        ("manny", "Manny Manager", Role::Manager),
        ("erin", "Erin Employee", Role::Employee),
        ("ed", "Ed Developer", Role::Employee),
        ("ada", "Ada Auditor", Role::Auditor),
    ];
    for (who, name, role) in people {
        let invite = OrgCommand::InviteMember {
            actor: Token::new("olive")?,
            member: Token::new(who)?,
            email: format!("{who}@acme.test"),
            name: name.into(),
            role,
        };
        commands
            .execute::<Organization>(&org, &id, invite, &meta(&format!("demo-invite-{who}")))
            .await
            .with_context(|| format!("seed demo member {who}"))?;
    }
    Ok(())
}
