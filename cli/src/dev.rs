//! `trackhrs dev`: the whole platform in one process on a laptop, with its own
//! nats-server and PostgreSQL under the data folder and a demo organization.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use trackhrs_app::App;
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_harness::pg::Durability;
use trackhrs_harness::tls::LocalCa;
use trackhrs_harness::{NatsOptions, NatsServer, PgServer};
use trackhrs_nats::{EventStore, StoreConfig};

use trackhrs_platform::{Platform, ReadModels, TlsIdentity};

use crate::platform::{self, GatewayArgs, Shutdown};
use crate::telemetry::{MetricsArgs, serve_metrics};

/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "trackhrs demo 2026";

/// Arguments of `dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Folder for the embedded servers' data.
    #[arg(long, env = "TRACKHRS_DATA_DIR", default_value = crate::local::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Use these NATS servers (comma-separated) instead of starting one.
    #[arg(long, env = "TRACKHRS_NATS_URL")]
    nats_url: Option<String>,
    #[command(flatten)]
    nats_auth: crate::NatsAuth,
    /// The key-encryption key; by default `<data dir>/kek`, created on the
    /// first start.
    #[command(flatten)]
    kek: crate::keys::KekArgs,
    /// Use this PostgreSQL database instead of starting a server.
    #[arg(long, env = "TRACKHRS_DATABASE_URL")]
    database_url: Option<String>,
    /// Port of the embedded nats-server.
    #[arg(long, env = "TRACKHRS_DEV_NATS_PORT", default_value_t = 14222)]
    nats_port: u16,
    /// Port of the embedded PostgreSQL.
    #[arg(long, env = "TRACKHRS_DEV_PG_PORT", default_value_t = 15432)]
    pg_port: u16,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Start, provision and seed, then stop (a smoke test of the set-up).
    #[arg(long)]
    once: bool,
    /// Serve plaintext (http://) instead of TLS, for local experiments. By
    /// default the gateway serves TLS with a certificate from a local CA
    /// under `<data dir>/tls`, created on the first start.
    #[arg(long, env = "TRACKHRS_DEV_PLAINTEXT")]
    plaintext: bool,
}

/// The local CA and the gateway's certificate under `<data dir>/tls`,
/// created on the first start (for `localhost`, `127.0.0.1`, `::1` and the
/// listen address): the certificate and key to serve, and the CA's file.
fn local_tls(
    data_dir: &std::path::Path,
    listen: SocketAddr,
) -> anyhow::Result<(TlsIdentity, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = data_dir.join("tls");
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("gateway.pem"),
        dir.join("gateway.key"),
    );
    if !(ca.is_file() && cert.is_file() && key.is_file()) {
        std::fs::create_dir_all(&dir)?;
        let ip = listen.ip().to_string();
        let mut hosts = vec!["localhost", "127.0.0.1", "::1"];
        if !listen.ip().is_unspecified() && !hosts.contains(&ip.as_str()) {
            hosts.push(&ip);
        }
        let local = LocalCa::new("TrackHrs dev CA", &hosts).context("create the local CA")?;
        std::fs::write(&ca, &local.ca_pem)?;
        std::fs::write(&cert, &local.cert_pem)?;
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)?
            .write_all(local.key_pem.as_bytes())?;
    }
    Ok((
        TlsIdentity {
            cert_pem: std::fs::read(&cert)?,
            key_pem: std::fs::read(&key)?,
        },
        ca,
    ))
}

/// Runs every role until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir)?;
    std::fs::create_dir_all(&data_dir)?;

    // Kept alive for the whole run: dropping them stops the servers.
    let mut nats_server = None;
    let nats_url = match args.nats_url {
        Some(url) => url,
        None => {
            let server = NatsServer::start_with(NatsOptions {
                sync_always: true,
                store_dir: Some(data_dir.join("nats")),
                port: Some(args.nats_port),
                accounts: false,
                tls: None,
            })
            .await
            .context("start the embedded nats-server")?;
            let url = server.url();
            nats_server = Some(server);
            url
        }
    };
    let mut pg_server = None;
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
            pg_server = Some(server);
            PgServer::connection_string_for(args.pg_port, "trackhrs")
        }
    };
    let pg: tokio_postgres::Config = database_url
        .parse()
        .context("invalid PostgreSQL connection string")?;
    let (kek, kek_file) = args.kek.dev_keyring(&data_dir)?;
    crate::local::write(
        &data_dir,
        nats_server.is_some().then_some(nats_url.as_str()),
        pg_server.is_some().then_some(database_url.as_str()),
        kek_file.as_deref(),
    )
    .context("record the platform's endpoints in the data folder")?;

    let client = args.nats_auth.connect(&nats_url).await?;
    let config = StoreConfig::with_kek(kek);
    // Its own server it provisions; a server it is pointed at was provisioned
    // by `trackhrs provision`, and dev connects as the runtime does.
    if nats_server.is_some() {
        trackhrs_platform::provision(&client, &config).await?;
    }
    let store = EventStore::open(client, config)
        .await
        .context("open the event store")?;
    let mut settings = platform::settings(&args.gateway, ReadModels::All)?;
    anyhow::ensure!(
        !(args.plaintext && settings.tls.is_some()),
        "--plaintext and --tls-cert exclude each other"
    );
    // TLS unless told otherwise: the given certificate, else the local CA's.
    let mut local_ca = None;
    if settings.tls.is_none() && !args.plaintext {
        let (identity, ca) = local_tls(&data_dir, args.gateway.listen)?;
        settings.tls = Some(identity);
        local_ca = Some(ca);
    }
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // The demo org's owner operates the local platform, unless told otherwise.
    if settings.app.operator_org.is_none() {
        settings.app.operator_org = Some(Token::new("acme")?);
    }
    if args.once {
        settings.gateway = None;
        settings.read_models = ReadModels::None;
    }
    let assembled = Platform::build(store, pg, settings).await?;
    let app = assembled
        .app()
        .context("the local platform opens its application layer")?
        .clone();
    seed_demo_org(&app).await?;
    seed_demo_work(&app).await?;
    seed_demo_pay(&app).await?;

    let listen = args.gateway.listen;
    let metrics = if args.once {
        None
    } else {
        Some(serve_metrics(&args.metrics).await?)
    };
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    if args.once {
        writeln!(
            out,
            "TrackHrs is set up (--once: stopping now, nothing is served)."
        )?;
    } else {
        writeln!(out, "TrackHrs is running.")?;
    }
    writeln!(out, "  NATS:        {nats_url}")?;
    writeln!(out, "  PostgreSQL:  {database_url}")?;
    if let Some(metrics) = metrics {
        writeln!(out, "  metrics:     http://{metrics}/metrics (Prometheus)")?;
    }
    writeln!(
        out,
        "  gRPC:        {listen} (gRPC and gRPC-Web: identity, organizations, agent session, activity, operations, health, reflection)"
    )?;
    match &args.gateway.portal_dir {
        Some(dir) if dir.join("index.html").is_file() => writeln!(
            out,
            "  portal:      {scheme}://{listen}/ (sign in as a demo member below)"
        )?,
        Some(dir) => writeln!(
            out,
            "  portal:      not built ({} has no index.html; scripts/deps.sh builds it)",
            dir.display()
        )?,
        None => writeln!(
            out,
            "  portal:      not served (--portal-dir portal/dist serves it)"
        )?,
    }
    writeln!(
        out,
        "  demo org:    acme; members olive (owner), manny (manager), erin and ed (employees), ada (auditor)"
    )?;
    writeln!(
        out,
        "               e-mail <name>@acme.test, password \"{DEMO_PASSWORD}\""
    )?;
    let grpcurl = match &local_ca {
        Some(ca) => {
            writeln!(
                out,
                "  TLS:         served with a certificate of the local CA {ca}, created for",
                ca = ca.display()
            )?;
            writeln!(
                out,
                "               localhost and 127.0.0.1. Trust it to connect: agents --gateway-ca {ca},",
                ca = ca.display()
            )?;
            writeln!(
                out,
                "               grpcurl -cacert {ca}, browsers: import it as an authority (Debian:",
                ca = ca.display()
            )?;
            writeln!(
                out,
                "               cp {ca} /usr/local/share/ca-certificates/trackhrs-dev.crt && update-ca-certificates).",
                ca = ca.display()
            )?;
            writeln!(out, "               --plaintext serves http:// instead.")?;
            format!("grpcurl -cacert {}", ca.display())
        }
        None if scheme == "https" => "grpcurl".to_owned(),
        None => "grpcurl -plaintext".to_owned(),
    };
    writeln!(out, "Try (see README.md for more):")?;
    writeln!(out, "  {grpcurl} {listen} list")?;
    writeln!(
        out,
        "  {grpcurl} -d '{{\"org_id\":\"acme\",\"email\":\"olive@acme.test\",\"password\":\"{DEMO_PASSWORD}\"}}' {listen} trackhrs.org.v1.Identity/Login"
    )?;
    writeln!(
        out,
        "  cargo run --bin trackhrs -- events tail --nats-url {nats_url}"
    )?;
    if !args.once {
        writeln!(
            out,
            "Simulated agents on the laptops of manny, erin and ed upload today's work. The dashboard,"
        )?;
        writeln!(out, "with the access_token of the log-in above as TOKEN:")?;
        writeln!(
            out,
            "  {grpcurl} -H \"authorization: Bearer $TOKEN\" -d '{{\"org_id\":\"acme\",\"from\":\"{today}\",\"to\":\"{today}\"}}' {listen} trackhrs.activity.v1.Activity/GetDashboard",
            today = chrono::Utc::now().date_naive()
        )?;
    }
    drop(out);
    if args.once {
        return Ok(());
    }
    let shutdown = Shutdown::on_signal();
    let agents = tokio::spawn(crate::simulate::run(
        app.clone(),
        Token::new("acme")?,
        format!("{scheme}://{listen}"),
        local_ca,
        shutdown.clone(),
    ));
    assembled.run(shutdown.wait()).await?;
    agents.await??;
    Ok(())
}

/// Creates the demo organization and its members' passwords. Fixed command
/// ids make it idempotent: a second run gets the original results and
/// stores nothing new.
async fn seed_demo_org(app: &App) -> anyhow::Result<()> {
    let org = Token::new("acme")?;
    let olive = Token::new("olive")?;
    // What exists already is left alone, so a second run stores nothing
    // however many commands the org has had since.
    let state = app.org_commands().state(&org).await?;
    if !state.created {
        let create = OrgCommand::Create {
            name: "Acme Corp".into(),
            owner: olive.clone(),
            owner_email: "olive@acme.test".into(),
            owner_name: "Olive Owner".into(),
            seats: 10,
        };
        app.org_commands()
            .execute(&org, "system:dev", "demo-create-org", create)
            .await
            .context("seed the demo org")?;
    }
    let people = [
        ("manny", "Manny Manager", Role::Manager),
        ("erin", "Erin Employee", Role::Employee),
        ("ed", "Ed Developer", Role::Employee),
        ("ada", "Ada Auditor", Role::Auditor),
    ];
    for (who, name, role) in people {
        let member = Token::new(who)?;
        if state.members.contains_key(&member) {
            continue;
        }
        let invite = OrgCommand::InviteMember {
            actor: olive.clone(),
            member,
            email: format!("{who}@acme.test"),
            name: name.into(),
            role,
        };
        app.org_commands()
            .execute(&org, "system:dev", &format!("demo-invite-{who}"), invite)
            .await
            .with_context(|| format!("seed demo member {who}"))?;
    }
    let hash = app
        .credentials()
        .hash_password(DEMO_PASSWORD.into())
        .await?;
    for who in ["olive", "manny", "erin", "ed", "ada"] {
        app.credentials()
            .put_account_if_absent("acme", who, &format!("{who}@acme.test"), &hash)
            .await
            .with_context(|| format!("seed the password of {who}"))?;
    }
    Ok(())
}

/// The demo org's work: team Core (managed by manny, with erin and ed),
/// client Globex, the billable project Website (a 40-hour budget; tasks
/// Build and Review) and the internal project Internal (Meetings, Support),
/// and attribution rules for what the simulated agents use. Seeded once:
/// an org with attribution rules (the seed's last step, or the user's own)
/// is left as it is; fixed command ids make a seed interrupted half-way
/// finish on the next run.
async fn seed_demo_work(app: &App) -> anyhow::Result<()> {
    use trackhrs_app::Caller;
    use trackhrs_app::work::NewProject;
    use trackhrs_domain::attribution::AttributionRule;
    use trackhrs_domain::project::Budget;

    let olive = Caller {
        org: Token::new("acme")?,
        person: Token::new("olive")?,
    };
    if app
        .org_commands()
        .state(&olive.org)
        .await?
        .attribution_version
        > 0
    {
        return Ok(());
    }
    let work = app.work();
    let (team, _) = work
        .create_team(&olive, "acme", "demo-team-core", "Core".into())
        .await?;
    work.set_team_managers(
        &olive,
        "acme",
        "demo-team-managers",
        team.as_str(),
        &["manny".into()],
    )
    .await?;
    for who in ["erin", "ed"] {
        work.set_member_team(
            &olive,
            "acme",
            &format!("demo-team-{who}"),
            who,
            Some(team.as_str()),
        )
        .await?;
    }
    let (globex, _) = work
        .create_client(&olive, "acme", "demo-client-globex", "Globex".into())
        .await?;
    let project =
        |name: &str, client: Option<String>, billable: bool, hours: Option<u32>| NewProject {
            name: name.into(),
            client,
            billable,
            budget: Budget {
                hours,
                money_minor: hours.map(|h| i64::from(h) * 10_000),
                rate_minor: hours.map(|_| 10_000),
            },
            members: vec![],
        };
    let (website, _) = work
        .create_project(
            &olive,
            "acme",
            "demo-project-website",
            project("Website", Some(globex.to_string()), true, Some(40)),
        )
        .await?;
    let (internal, _) = work
        .create_project(
            &olive,
            "acme",
            "demo-project-internal",
            project("Internal", None, false, None),
        )
        .await?;
    let mut tasks = Vec::new();
    for (project, name) in [
        (&website, "Build"),
        (&website, "Review"),
        (&internal, "Meetings"),
        (&internal, "Support"),
    ] {
        let (task, _) = work
            .add_task(
                &olive,
                "acme",
                &format!("demo-task-{name}"),
                project.as_str(),
                name.into(),
            )
            .await?;
        tasks.push(task);
    }
    let rule = |project: &Token, task: &Token, regex: &str| AttributionRule {
        project: project.clone(),
        task: Some(task.clone()),
        regex: regex.into(),
        ignore_case: true,
    };
    let rules = vec![
        rule(&website, &tasks[0], "^(code|alacritty)$|stackoverflow"),
        rule(&website, &tasks[1], "github\\.com/.*/pull"),
        rule(&internal, &tasks[2], "^(zoom|slack)$"),
        rule(&internal, &tasks[3], "^thunderbird$"),
    ];
    work.set_attribution_rules(&olive, "acme", "demo-attribution", rules)
        .await?;
    Ok(())
}

/// The demo org's pay policy: euros, monthly pay periods from 2026,
/// overtime after 8 hours a day and 40 a week, the year-end holidays,
/// vacation (10 hours a month, 40 carried into a new year, 16 under zero
/// allowed), sick and unpaid leave, and rates: Erin salaried until July
/// 2026 and hourly since, Ed hourly from June, Manny and Olive salaried.
/// Every command has a fixed id: a second start changes nothing.
async fn seed_demo_pay(app: &App) -> anyhow::Result<()> {
    use trackhrs_app::Caller;
    use trackhrs_app::pay::PolicyInput;
    use trackhrs_domain::payroll::compute::{Overtime, Threshold};
    use trackhrs_domain::payroll::schedule::PeriodKind;
    use trackhrs_domain::payroll::{Accrual, AccrualEvery};

    const H: i64 = 3_600_000;
    let olive = Caller {
        org: Token::new("acme")?,
        person: Token::new("olive")?,
    };
    let date = |s: &str| -> anyhow::Result<chrono::NaiveDate> { Ok(s.parse()?) };
    let leave_type =
        |name: &str, paid: bool, accrual: Option<Accrual>, cap: Option<i64>, allowance: i64| {
            PolicyInput::LeaveType {
                id: None,
                name: name.into(),
                paid,
                accrual,
                carry_over_cap_ms: cap,
                negative_allowance_ms: allowance,
                since: date("2026-01-01").ok(),
            }
        };
    let rate =
        |person: &str, from: &str, salaried: bool, amount: &str| -> anyhow::Result<PolicyInput> {
            Ok(PolicyInput::Rate {
                person: person.into(),
                from: date(from)?,
                salaried,
                amount: amount.into(),
                ended: false,
            })
        };
    let mut changes = vec![
        ("currency", PolicyInput::Currency("EUR".into())),
        (
            "schedule",
            PolicyInput::Schedule {
                from: date("2026-01-01")?,
                kind: PeriodKind::Monthly,
            },
        ),
        (
            "overtime",
            PolicyInput::Overtime(Overtime {
                daily: Some(Threshold {
                    after_ms: 8 * H,
                    percent: 150,
                }),
                daily_double: Some(Threshold {
                    after_ms: 12 * H,
                    percent: 200,
                }),
                weekly: Some(Threshold {
                    after_ms: 40 * H,
                    percent: 150,
                }),
            }),
        ),
        (
            "vacation",
            leave_type(
                "Vacation",
                true,
                Some(Accrual {
                    every: AccrualEvery::Month,
                    ms: 10 * H,
                }),
                Some(40 * H),
                16 * H,
            ),
        ),
        ("sick", leave_type("Sick", true, None, None, 0)),
        ("unpaid", leave_type("Unpaid", false, None, None, 0)),
    ];
    for (day, name) in [
        ("2026-12-24", "Christmas Eve"),
        ("2026-12-25", "Christmas Day"),
        ("2026-12-31", "New Year's Eve"),
        ("2027-01-01", "New Year's Day"),
    ] {
        changes.push((
            day,
            PolicyInput::Holiday {
                date: date(day)?,
                name: Some(name.into()),
            },
        ));
    }
    changes.push(("rate-erin-1", rate("erin", "2026-01-01", true, "4200.00")?));
    changes.push(("rate-erin-2", rate("erin", "2026-07-01", false, "32.50")?));
    changes.push(("rate-ed", rate("ed", "2026-06-01", false, "28.00")?));
    changes.push(("rate-manny", rate("manny", "2026-01-01", true, "5200.00")?));
    changes.push(("rate-olive", rate("olive", "2026-01-01", true, "7000.00")?));
    for (tag, change) in changes {
        app.pay()
            .change_policy(&olive, "acme", &format!("demo-pay-{tag}"), change)
            .await?;
    }
    Ok(())
}
