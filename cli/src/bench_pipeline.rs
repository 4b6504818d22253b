//! `trackhrs bench pipeline`: the activity pipeline end to end against real
//! servers started for the run (nats-server with `sync_interval: always`,
//! PostgreSQL with `pg_stat_statements` to count write statements): gRPC
//! ingest against raw JetStream publishes of the same messages, projection
//! apply against raw COPY + upsert of equivalent rows, and a full rebuild
//! against a read-only replay of the stream (decoded) and a read of its
//! bytes alone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use chrono::DateTime;
use futures::StreamExt;
use serde_json::{Map, json};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tonic::metadata::{Ascii, MetadataValue};
use trackhrs_app::AppConfig;
use trackhrs_app::IngestConfig;
use trackhrs_credentials::AuthConfig;
use trackhrs_domain::Token;
use trackhrs_domain::organization::OrgCommand;
use trackhrs_harness::pg::Durability;
use trackhrs_harness::tls::LocalCa;
use trackhrs_harness::{NatsOptions, NatsServer, PgServer};
use trackhrs_nats::reader::{self, StartAt};
use trackhrs_nats::{EventStore, StoreConfig};
use trackhrs_platform::{Platform, Settings, TlsIdentity};
use trackhrs_projections::activity::{self, Activity};
use trackhrs_projections::work::Work;
use trackhrs_projections::{Runner, RunnerConfig, VersionState, catalog};
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};

use crate::bench::{clock_ticks, cpu_ticks, publish_all, say};
use crate::bench_floor;

/// Arguments of `bench pipeline`.
#[derive(clap::Args)]
pub struct PipelineBenchArgs {
    /// Spans uploaded in all.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Spans per uploaded batch.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Devices uploading.
    #[arg(long, default_value_t = 100)]
    devices: u64,
    /// Devices uploading at once, and acknowledgements in flight for raw publishes.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Most appends the event store commits together as one atomic batch
    /// (as `trackhrs run --group-commit-max`; 1 turns group commit off).
    #[arg(long, default_value_t = StoreConfig::default().group_commit_max)]
    group_commit_max: usize,
    /// The gateway serves TLS (a certificate from a CA made for the run),
    /// and the uploaders trust that CA: the cost of TLS on ingest.
    #[arg(long)]
    tls: bool,
}

const SPAN_MS: i64 = 30_000;
const APPS: [&str; 8] = [
    "code",
    "firefox",
    "slack",
    "zoom",
    "alacritty",
    "thunderbird",
    "libreoffice",
    "spotify",
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The spans of one device, back to back from 20 days ago.
fn device_spans(device: u64, n: u64, start: i64) -> Vec<Span> {
    (0..n)
        .map(|i| {
            let at = start + i as i64 * SPAN_MS;
            Span {
                start_unix_ms: at,
                end_unix_ms: at + SPAN_MS,
                app: APPS[(i as usize + device as usize) % APPS.len()].into(),
                title: format!("file{}.rs - project{}", i % 40, device % 5),
                url: None,
                active: i % 6 != 5,
            }
        })
        .collect()
}

/// One uploader's requests, each with its device's bearer token.
type Uploads = Vec<(MetadataValue<Ascii>, UploadBatchRequest)>;

/// Every device's uploads, built before the clock starts (as the raw
/// publishes' messages are): one list per concurrent uploader, the devices
/// dealt round-robin, each device's batches in its sequence.
fn requests(
    tokens: &[String],
    args: &PipelineBenchArgs,
    per_device: u64,
    start: i64,
) -> anyhow::Result<Vec<Uploads>> {
    let mut uploaders = Vec::new();
    for w in 0..args.concurrency {
        let mut uploads = Vec::new();
        for d in (w..args.devices).step_by(args.concurrency as usize) {
            let bearer = MetadataValue::try_from(format!("Bearer {}", tokens[d as usize]))?;
            let all = device_spans(d, per_device, start);
            for (i, chunk) in all.chunks(args.batch as usize).enumerate() {
                let request = UploadBatchRequest {
                    batch_id: format!("dev{d}-{}", i + 1),
                    device_batch_seq: i as u64 + 1,
                    spans: chunk.to_vec(),
                    retractions: vec![],
                };
                uploads.push((bearer.clone(), request));
            }
        }
        uploaders.push(uploads);
    }
    Ok(uploaders)
}

/// A connection to the gateway at `addr`, as an agent makes it: TLS
/// trusting the CA certificate in `ca` when given, else plaintext.
async fn dial(addr: SocketAddr, ca: Option<&Path>) -> anyhow::Result<tonic::transport::Channel> {
    let url = match ca {
        Some(_) => format!("https://localhost:{}", addr.port()),
        None => format!("http://{addr}"),
    };
    Ok(trackhrs_agent::runner::gateway_endpoint(&url, ca)?
        .connect()
        .await?)
}

/// One connection to the service at `addr` per uploader (as agents on
/// their own machines each have theirs), opened before the clock starts.
async fn connect_all(
    addr: SocketAddr,
    ca: Option<&Path>,
    uploaders: usize,
) -> anyhow::Result<Vec<AgentIngestClient<tonic::transport::Channel>>> {
    let mut clients = Vec::with_capacity(uploaders);
    for _ in 0..uploaders {
        clients.push(AgentIngestClient::new(dial(addr, ca).await?));
    }
    Ok(clients)
}

/// Uploads each list on its own client, the lists at once and each in
/// order; returns the spans acknowledged.
async fn upload_all(
    clients: Vec<AgentIngestClient<tonic::transport::Channel>>,
    uploaders: Vec<Uploads>,
) -> anyhow::Result<u64> {
    let mut workers = Vec::new();
    for (mut client, uploads) in clients.into_iter().zip(uploaders) {
        workers.push(tokio::spawn(async move {
            let mut spans = 0u64;
            for (bearer, batch) in uploads {
                let n = batch.spans.len() as u64;
                let mut request = tonic::Request::new(batch);
                request.metadata_mut().insert("authorization", bearer);
                client.upload_batch(request).await?;
                spans += n;
            }
            anyhow::Ok(spans)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok(total)
}

/// CPU time (user and system) used so far by this process (in the phases
/// measured: the gateway or the floor service, and the load generator) and
/// by nats-server.
#[derive(Debug, Clone, Copy)]
struct CpuUsed {
    process: Duration,
    nats_server: Duration,
}

impl std::ops::Sub for CpuUsed {
    type Output = CpuUsed;
    fn sub(self, earlier: CpuUsed) -> CpuUsed {
        CpuUsed {
            process: self.process.saturating_sub(earlier.process),
            nats_server: self.nats_server.saturating_sub(earlier.nats_server),
        }
    }
}

impl CpuUsed {
    /// Microseconds of CPU per span, per process, for the report.
    fn per_span(&self, spans: u64) -> serde_json::Value {
        let us =
            |d: Duration| (d.as_secs_f64() * 1e6 / spans.max(1) as f64 * 100.0).round() / 100.0;
        json!({"process": us(self.process), "nats_server": us(self.nats_server)})
    }
}

/// Measures a phase: its wall-clock time and the CPU time this process and
/// nats-server used in it.
struct Meter {
    nats_pid: String,
    ticks_per_s: u64,
}

impl Meter {
    fn used(&self) -> anyhow::Result<CpuUsed> {
        Ok(CpuUsed {
            process: cpu_time("self", self.ticks_per_s)?,
            nats_server: cpu_time(&self.nats_pid, self.ticks_per_s)?,
        })
    }

    async fn measure<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<(T, Duration, CpuUsed)> {
        let before = self.used()?;
        let started = Instant::now();
        let value = work.await?;
        let elapsed = started.elapsed();
        Ok((value, elapsed, self.used()? - before))
    }
}

/// CPU time (user and system, all threads) used so far by process `pid`.
fn cpu_time(pid: &str, ticks_per_s: u64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(Duration::from_millis(
        cpu_ticks(&stat)? * 1000 / ticks_per_s,
    ))
}

fn per_s(n: u64, elapsed: Duration) -> f64 {
    (n as f64 / elapsed.as_secs_f64().max(1e-9)).round()
}

/// Runs the benchmark and prints one JSON object as its last line.
pub async fn run_pipeline(args: PipelineBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (nats, _pg, client, pg_config) = bench_servers(
        dir.path(),
        &[
            "shared_preload_libraries=pg_stat_statements",
            "max_wal_size=4GB",
        ],
    )
    .await?;
    let (db, conn) = pg_config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await?;

    let config = StoreConfig {
        group_commit_max: args.group_commit_max,
        ..StoreConfig::with_kek(crate::bench::bench_kek()?)
    };
    trackhrs_nats::provision(&client, &config).await?;
    let store = EventStore::open(client.clone(), config.clone()).await?;
    let app_config = AppConfig {
        auth: AuthConfig::default(),
        ingest: IngestConfig {
            max_spans: args.batch as usize,
            ..IngestConfig::default()
        },
        ..AppConfig::default()
    };
    // With --tls: a CA made for the run, its certificate where the
    // uploaders read it.
    let ca = args
        .tls
        .then(|| LocalCa::new("TrackHrs bench CA", &["localhost"]))
        .transpose()?;
    let ca_file = dir.path().join("ca.pem");
    if let Some(ca) = &ca {
        std::fs::write(&ca_file, &ca.ca_pem)?;
    }
    let ca_path = ca.is_some().then_some(ca_file.as_path());
    let gateway = Platform::build(
        store.clone(),
        pg_config.clone(),
        Settings {
            app: app_config,
            pg_pool: 16,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            tls: ca.map(|ca| TlsIdentity {
                cert_pem: ca.cert_pem.into_bytes(),
                key_pem: ca.key_pem.into_bytes(),
            }),
            ..Settings::default()
        },
    )
    .await?;
    let (tokens, _, gateway_addr, app) = serve_devices(gateway, args.devices, ca_path).await?;

    // 1. Ingest through gRPC.
    let per_device = args.spans / args.devices;
    let start = now_ms() - 20 * 24 * 3_600_000;
    let before_ingest = store.last_sequence().await?;
    say(&format!(
        "ingest: {} spans from {} devices in batches of {}, {} devices at once",
        per_device * args.devices,
        args.devices,
        args.batch,
        args.concurrency
    ));
    let meter = Meter {
        nats_pid: nats
            .pid()
            .context("nats-server is not running")?
            .to_string(),
        ticks_per_s: clock_ticks()?,
    };
    let uploads = requests(&tokens, &args, per_device, start)?;
    let clients = connect_all(gateway_addr, ca_path, uploads.len()).await?;
    let (ingested, ingest_elapsed, ingest_cpu) =
        meter.measure(upload_all(clients, uploads)).await?;
    let last = store.last_sequence().await?;
    let messages = last - before_ingest;
    say(&format!(
        "ingest: {ingested} spans in {messages} commits, {:.1} s",
        ingest_elapsed.as_secs_f64()
    ));

    // 2. Read-only ordered replay of the whole stream, decoded.
    let js = jetstream::new(client.clone());
    let started = Instant::now();
    let mut log = reader::read(
        &js,
        store.keys().clone(),
        &config.events_stream,
        StartAt::Start,
        None,
    )
    .await?;
    let mut events = 0u64;
    while let Some(item) = log.next().await {
        let commit = item.commit?;
        events += commit.events.len() as u64;
        if commit.stream_sequence >= last {
            break;
        }
    }
    drop(log);
    let raw_replay = started.elapsed();
    say(&format!(
        "replay: {events} events in {:.1} s",
        raw_replay.as_secs_f64()
    ));

    // 2b. The same ordered read without decoding: the stream's bytes only.
    let source = js.get_stream(&config.events_stream).await?;
    let started = Instant::now();
    let mut bytes_read = 0usize;
    let mut whole = source
        .create_consumer(pull::OrderedConfig {
            max_batch: reader::ORDERED_PULL_MAX,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    loop {
        let msg = whole.next().await.context("raw read ended early")??;
        bytes_read += msg.payload.len();
        if msg.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence >= last {
            break;
        }
    }
    drop(whole);
    let raw_read = started.elapsed();
    say(&format!(
        "raw read: {bytes_read} bytes in {:.1} s",
        raw_read.as_secs_f64()
    ));

    // 3. The same messages published raw, acknowledgements pipelined.
    let ordered = source
        .create_consumer(pull::OrderedConfig {
            filter_subject: "evt.*.device_activity.*".into(),
            max_batch: reader::ORDERED_PULL_MAX,
            ..Default::default()
        })
        .await?;
    let mut raw = Vec::with_capacity(messages as usize);
    let mut stream_msgs = ordered.messages().await?;
    while (raw.len() as u64) < messages {
        let msg = stream_msgs.next().await.context("raw read ended early")??;
        raw.push((format!("benchraw.{}", msg.subject), msg.payload.to_vec()));
    }
    drop(stream_msgs);
    js.create_or_update_stream(stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["benchraw.>".into()],
        ..Default::default()
    })
    .await?;
    let (_, raw_publish, raw_cpu) = meter
        .measure(publish_all(
            &js,
            raw.into_iter(),
            args.concurrency as usize,
            true,
        ))
        .await?;

    // 3b. The same uploads through the floor service: gRPC and a publish,
    // none of the gateway's own work.
    let floor_addr = bench_floor::serve(js.clone()).await?;
    let uploads = requests(&tokens, &args, per_device, start)?;
    let clients = connect_all(floor_addr, None, uploads.len()).await?;
    let (floor_spans, grpc_floor, floor_cpu) = meter.measure(upload_all(clients, uploads)).await?;

    // 4. Raw COPY into a temp table + upsert of one row per span.
    db.batch_execute(
        "CREATE TABLE bench_daily (org_id text, person_id text, day date, activity_id bigint, \
         active boolean, ms bigint, PRIMARY KEY (org_id, day, person_id, activity_id, active))",
    )
    .await?;
    let rows: Vec<(chrono::NaiveDate, i64, bool)> = (0..args.devices)
        .flat_map(|d| device_spans(d, per_device, start))
        .map(|s| {
            let day = DateTime::from_timestamp_millis(s.start_unix_ms)
                .map(|t| t.date_naive())
                .unwrap_or_default();
            (
                day,
                activity::activity_id(&s.app, Some(&s.title), None),
                s.active,
            )
        })
        .collect();
    let chunk = (args.batch * 100) as usize;
    let (mut raw_db, conn) = pg_config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let started = Instant::now();
    for part in rows.chunks(chunk) {
        let tx = raw_db.transaction().await?;
        tx.batch_execute("CREATE TEMP TABLE t (LIKE bench_daily) ON COMMIT DROP")
            .await?;
        let sink = tx
            .copy_in("COPY t (org_id, person_id, day, activity_id, active, ms) FROM STDIN BINARY")
            .await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::TEXT,
                Type::DATE,
                Type::INT8,
                Type::BOOL,
                Type::INT8,
            ],
        );
        futures::pin_mut!(writer);
        for (day, id, active) in part {
            writer
                .as_mut()
                .write(&[&"bench", &"owner", day, id, active, &SPAN_MS])
                .await?;
        }
        writer.finish().await?;
        tx.batch_execute(
            "INSERT INTO bench_daily SELECT org_id, person_id, day, activity_id, active, sum(ms) \
             FROM t GROUP BY 1, 2, 3, 4, 5 \
             ON CONFLICT (org_id, day, person_id, activity_id, active) \
             DO UPDATE SET ms = bench_daily.ms + EXCLUDED.ms",
        )
        .await?;
        tx.commit().await?;
    }
    let raw_upsert = started.elapsed();
    let upserted = rows.len() as u64;

    // 5. The activity projection applies the whole stream (version 1).
    db.batch_execute("SELECT pg_stat_statements_reset()")
        .await?;
    let apply = project(Activity::new(1), &store, &pg_config, &db, false, last).await?;
    let writes: i64 = db
        .query_one(
            "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query ~* '^\\s*(insert|update|delete|copy|merge)'",
            &[],
        )
        .await?
        .get(0);
    let applied = catalog::version_info(&db, activity::NAME, 1)
        .await?
        .map_or(0, |v| v.events_applied);

    // 6. A full rebuild beside it (version 2), until it is live.
    let rebuild = project(Activity::new(2), &store, &pg_config, &db, true, last).await?;

    // 7. The work read model (project time per member-week) applies the
    // same stream.
    let work_apply = project(Work::new(1), &store, &pg_config, &db, false, last).await?;
    let work_applied = catalog::version_info(&db, trackhrs_projections::work::NAME, 1)
        .await?
        .map_or(0, |v| v.events_applied);

    let mut report = Map::new();
    report.insert("spans".into(), json!(ingested));
    report.insert("batch".into(), json!(args.batch));
    report.insert("concurrency".into(), json!(args.concurrency));
    report.insert("group_commit_max".into(), json!(args.group_commit_max));
    report.insert("commits".into(), json!(messages));
    report.insert(
        "raw_publish_per_s".into(),
        json!(per_s(ingested, raw_publish)),
    );
    report.insert(
        "ingest_spans_per_s".into(),
        json!(per_s(ingested, ingest_elapsed)),
    );
    report.insert(
        "grpc_floor_spans_per_s".into(),
        json!(per_s(floor_spans, grpc_floor)),
    );
    report.insert(
        "cpu_us_per_span".into(),
        json!({
            "ingest": ingest_cpu.per_span(ingested),
            "grpc_floor": floor_cpu.per_span(floor_spans),
            "raw_publish": raw_cpu.per_span(ingested),
        }),
    );
    report.insert(
        "raw_upsert_rows_per_s".into(),
        json!(per_s(upserted, raw_upsert)),
    );
    report.insert("apply_events_per_s".into(), json!(per_s(applied, apply)));
    report.insert(
        "work_apply_events_per_s".into(),
        json!(per_s(work_applied, work_apply)),
    );
    report.insert(
        "writes_per_1k_events".into(),
        json!((writes as f64 * 1000.0 / applied.max(1) as f64 * 100.0).round() / 100.0),
    );
    report.insert(
        "raw_replay_s".into(),
        json!((raw_replay.as_secs_f64() * 100.0).round() / 100.0),
    );
    report.insert(
        "raw_read_s".into(),
        json!((raw_read.as_secs_f64() * 100.0).round() / 100.0),
    );
    report.insert(
        "rebuild_s".into(),
        json!((rebuild.as_secs_f64() * 100.0).round() / 100.0),
    );
    report.insert("events".into(), json!(events));
    report.insert("sync_interval".into(), json!("always"));
    report.insert(
        "cores".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    report.insert("nats_server".into(), json!(client.server_info().version));
    say(&serde_json::to_string(&serde_json::Value::Object(report))?);
    // The gateway's pooled connections end before PostgreSQL stops (each
    // would report the server's shutdown as a connection error).
    app.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// The servers a benchmark runs against, started for it: nats-server with
/// fsync on every write (its store under `dir`) and a private, durable
/// PostgreSQL with `settings` holding an empty database `bench`. Returns
/// them (they stop when dropped), a NATS connection and the database's
/// configuration.
pub async fn bench_servers(
    dir: &Path,
    settings: &[&str],
) -> anyhow::Result<(
    NatsServer,
    PgServer,
    async_nats::Client,
    tokio_postgres::Config,
)> {
    let nats = NatsServer::start_with(NatsOptions {
        sync_always: true,
        store_dir: Some(dir.join("js")),
        ..Default::default()
    })
    .await?;
    let pg = PgServer::start_private_with(Durability::Durable, settings).await?;
    let (admin, conn) =
        tokio_postgres::connect(&pg.connection_string("postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    admin.batch_execute("CREATE DATABASE bench").await?;
    let pg_config = pg.connection_string("bench").parse()?;
    let client = nats.connect().await?;
    Ok((nats, pg, client, pg_config))
}

/// A gateway with one org whose owner enrolled `devices` devices.
type Served = (
    Vec<String>,
    tonic::transport::Channel,
    SocketAddr,
    Arc<trackhrs_app::App>,
);

/// A bench platform on its own servers (fsync on every write): every read
/// model, and a gateway so that it opens the application layer, running
/// until the process ends; with the org `bench` and its owner.
pub struct BenchPlatform {
    /// Its nats-server and PostgreSQL, kept running until it is dropped.
    _servers: (NatsServer, PgServer),
    /// The event store.
    pub store: EventStore,
    /// The read models' database.
    pub pg_config: tokio_postgres::Config,
    /// The application layer.
    pub app: Arc<trackhrs_app::App>,
    /// The org `bench` and its owner.
    pub org: (Token, Token),
}

/// Starts a [`BenchPlatform`] with its data under `dir`.
pub async fn bench_platform(dir: &Path) -> anyhow::Result<BenchPlatform> {
    let (nats, pg, client, pg_config) = bench_servers(dir, &[]).await?;
    let config = StoreConfig::with_kek(crate::bench::bench_kek()?);
    trackhrs_nats::provision(&client, &config).await?;
    let store = EventStore::open(client, config).await?;
    let platform = Platform::build(
        store.clone(),
        pg_config.clone(),
        Settings {
            read_models: trackhrs_platform::ReadModels::All,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Settings::default()
        },
    )
    .await?;
    let app = platform
        .app()
        .context("the gateway opens its application layer")?
        .clone();
    tokio::spawn(platform.run(std::future::pending()));
    let org = create_bench_org(&app).await?;
    Ok(BenchPlatform {
        _servers: (nats, pg),
        store,
        pg_config,
        app,
        org,
    })
}

/// Creates the org `bench` with its owner `owner`; returns both ids.
pub async fn create_bench_org(app: &trackhrs_app::App) -> anyhow::Result<(Token, Token)> {
    let org = Token::new("bench")?;
    let owner = Token::new("owner")?;
    app.org_commands()
        .execute(
            &org,
            "system:bench",
            "bench-org",
            OrgCommand::Create {
                name: "Bench".into(),
                owner: owner.clone(),
                owner_email: "owner@bench.test".into(),
                owner_name: "Owner".into(),
                seats: 10,
            },
        )
        .await?;
    Ok((org, owner))
}

/// Creates one org whose owner enrolled `devices` devices, serves the
/// `gateway` platform (which has a gateway), and returns the device tokens,
/// a channel to the gateway, its address and the application layer.
pub async fn serve_devices(
    gateway: Platform,
    devices: u64,
    ca: Option<&Path>,
) -> anyhow::Result<Served> {
    let app = gateway
        .app()
        .context("the gateway opens its application layer")?
        .clone();
    // One org, one owner who enrolled every device.
    let (org, owner) = create_bench_org(&app).await?;
    let mut tokens = Vec::new();
    for d in 0..devices {
        let device = Token::new(format!("dev{d}"))?;
        app.org_commands()
            .execute(
                &org,
                "person:owner",
                &format!("enroll-{d}"),
                OrgCommand::EnrollDevice {
                    actor: owner.clone(),
                    device: device.clone(),
                    name: format!("laptop {d}"),
                },
            )
            .await?;
        tokens.push(
            app.credentials()
                .put_device_token("bench", device.as_str(), "owner")
                .await?,
        );
    }

    let addr = gateway
        .gateway_addr()
        .context("the platform has no gateway")?;
    tokio::spawn(gateway.run(std::future::pending()));
    let channel = dial(addr, ca).await?;

    Ok((tokens, channel, addr, app))
}

/// Runs `projection` (activity or work) at its version, configured as
/// `trackhrs projections run` runs it, from the start of the stream until
/// its checkpoint passes `last` (and, for a rebuild, until it is live).
async fn project<P: trackhrs_projections::Projection>(
    projection: P,
    store: &EventStore,
    pg_config: &tokio_postgres::Config,
    db: &tokio_postgres::Client,
    rebuild: bool,
    last: u64,
) -> anyhow::Result<Duration> {
    let (name, version) = (projection.name().to_owned(), projection.version());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = Runner::new(
        projection,
        store.clone(),
        pg_config.clone(),
        RunnerConfig {
            promote_when_caught_up: rebuild,
            ..trackhrs_platform::activity_config()
        },
    );
    let started = Instant::now();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if task.is_finished() {
            task.await??;
            anyhow::bail!("{name} v{version} stopped early");
        }
        if let Some(info) = catalog::version_info(db, &name, version).await?
            && info.position >= last
            && (!rebuild || info.state == VersionState::Live)
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await??;
    say(&format!(
        "{name} v{version} {}: {:.1} s",
        if rebuild { "rebuilt" } else { "applied" },
        elapsed.as_secs_f64()
    ));
    Ok(elapsed)
}
