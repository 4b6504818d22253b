//! `trackhrs bench query`: the portal's dashboard reads over gRPC, for an org
//! of `members` members with `days` days of activity, against its own
//! nats-server (fsync on every write) and PostgreSQL: the team summary the
//! portal paints first, cached, under concurrent load (requests/s, latency
//! percentiles), then uncached from a second gateway that keeps no
//! dashboards in memory, and the uncached member days for comparison; then
//! the work read model's week of every member and one member's week view.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use trackhrs_app::AppConfig;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_nats::{CommitMeta, EventStore};
use trackhrs_platform::{Platform, ReadModels, Settings};
use trackhrs_schemas::activity::v1::GetDashboardRequest;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
use trackhrs_schemas::org::v1::LoginRequest;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_schemas::work::v1::work_client::WorkClient;
use trackhrs_schemas::work::v1::{GetWeekRequest, ListWeeksRequest};

use crate::bench::say;
use crate::bench_pipeline::bench_platform;

/// Settings of `trackhrs bench query`.
#[derive(clap::Args, Debug, Clone)]
pub struct QueryBenchArgs {
    /// Members of the org, each with one device.
    #[arg(long, default_value_t = 100)]
    pub members: u64,
    /// Days of activity, ending today.
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Spans per member and day (distinct apps and titles cycle).
    #[arg(long, default_value_t = 40)]
    pub spans_per_day: u64,
    /// Concurrent callers of the cached dashboard.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of cached-dashboard load (as fast as the callers go, then
    /// again at `--rate`).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Requests per second of the paced cached-summary load (latency counted
    /// from when each request was due, so a stall is not hidden).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Serve this built portal (`portal/dist`) from the cached gateway and,
    /// after the figures, keep serving until Ctrl-C, printing a fixture for
    /// the browser scenarios (`PORTAL_FIXTURE=... node tests/run.mjs numbers`).
    #[arg(long)]
    pub portal_dir: Option<std::path::PathBuf>,
    /// Uncached summaries read (one at a time; a tenth as many member days).
    #[arg(long, default_value_t = 200)]
    pub uncached: u64,
}

const PASSWORD: &str = "bench password 2026";
const APPS: [&str; 8] = [
    "code", "firefox", "slack", "zoom", "terminal", "figma", "excel", "mail",
];

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Records the org's activity straight through the command handler: one
/// batch per member and day, `spans_per_day` spans of 10 minutes from 08:00.
async fn record(store: &EventStore, args: &QueryBenchArgs) -> anyhow::Result<u64> {
    let handler = CommandHandler::new(store.clone());
    let org = Token::new("bench")?;
    let today = chrono::Utc::now().date_naive();
    let mut last = 0;
    for m in 0..args.members {
        let device = Token::new(format!("dev{m}"))?;
        let member = Token::new(format!("m{m}"))?;
        for d in 0..args.days {
            let day = today - chrono::Duration::days((args.days - 1 - d) as i64);
            let start = day
                .and_hms_opt(8, 0, 0)
                .context("08:00 exists")?
                .and_utc()
                .timestamp_millis();
            let spans = (0..args.spans_per_day)
                .map(|s| {
                    let at = start + s as i64 * 600_000;
                    SpanInput {
                        start_ms: at,
                        end_ms: (at + 600_000).min(now_ms() - 1000),
                        app: APPS[(s as usize + m as usize) % APPS.len()].into(),
                        title: format!("document {} - project {}", s % 17, m % 5),
                        url: None,
                        active: s % 10 != 9,
                    }
                })
                .filter(|s| s.end_ms > s.start_ms)
                .collect::<Vec<_>>();
            if spans.is_empty() {
                continue;
            }
            let seq = d + 1;
            let command = ActivityCommand::RecordBatch {
                device: DeviceStatus::Active,
                member: member.clone(),
                batch_id: format!("m{m}-d{d}"),
                seq,
                spans,
                retractions: vec![],
                privacy: Privacy {
                    titles: true,
                    urls: false,
                },
                limits: IngestLimits {
                    now_ms: now_ms(),
                    max_skew_ms: 60_000,
                    horizon_ms: (args.days as i64 + 1) * 24 * 3_600_000,
                    max_spans: args.spans_per_day as usize,
                },
            };
            let meta = CommitMeta::new(format!("m{m}-d{d}"), "system:bench", now_ms() * 1000);
            if let Some(appended) = handler
                .execute::<DeviceActivity>(&org, &device, command, &meta)
                .await?
                .appended
            {
                last = last.max(appended.position);
            }
        }
    }
    Ok(last)
}

/// A gateway on the same servers (no read models of its own).
async fn gateway(
    store: &EventStore,
    pg: &tokio_postgres::Config,
    app: AppConfig,
    portal: Option<std::path::PathBuf>,
) -> anyhow::Result<SocketAddr> {
    let platform = Platform::build(
        store.clone(),
        pg.clone(),
        Settings {
            app,
            pg_pool: 16,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            portal,
            read_models: ReadModels::None,
            ..Settings::default()
        },
    )
    .await?;
    let addr = platform
        .gateway_addr()
        .context("the platform has no gateway")?;
    tokio::spawn(platform.run(std::future::pending()));
    Ok(addr)
}

fn team_dashboard(token: &str, days: u64) -> anyhow::Result<tonic::Request<GetDashboardRequest>> {
    let today = chrono::Utc::now().date_naive();
    let mut request = tonic::Request::new(GetDashboardRequest {
        org_id: "bench".into(),
        from: (today - chrono::Duration::days(days as i64 - 1)).to_string(),
        to: today.to_string(),
        person_ids: vec![],
        min_position: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn channel_to(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

fn authed<T>(token: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn list_weeks(token: &str, min_position: u64) -> anyhow::Result<tonic::Request<ListWeeksRequest>> {
    authed(
        token,
        ListWeeksRequest {
            org_id: "bench".into(),
            date: chrono::Utc::now().date_naive().to_string(),
            min_position,
        },
    )
}

/// Waits until the work read model has applied `last` (it applies the same
/// spans as the activity read model, so the reads below are not measured
/// while it catches up on the same two cores).
async fn wait_for_work(channel: &Channel, token: &str, last: u64) -> anyhow::Result<()> {
    let mut work = WorkClient::new(channel.clone());
    let started = Instant::now();
    let mut caught_up = None;
    for _ in 0..120 {
        match work.list_weeks(list_weeks(token, last)?).await {
            Ok(weeks) => {
                caught_up = Some(weeks.into_inner());
                break;
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {}
            Err(status) => return Err(status.into()),
        }
    }
    let weeks = caught_up.context("the work read model did not catch up")?;
    say(&format!(
        "work read model caught up ({:.1} s more): this week holds {} members' weeks",
        started.elapsed().as_secs_f64(),
        weeks.weeks.len()
    ));
    Ok(())
}

/// The work read model's week reads: this week of every member at once (a
/// manager's team view), and one member's week view, each `args.uncached`
/// times one at a time.
async fn week_figures(channel: &Channel, token: &str, args: &QueryBenchArgs) -> anyhow::Result<()> {
    let mut work = WorkClient::new(channel.clone());
    let today = chrono::Utc::now().date_naive().to_string();
    let mut members = 0;
    let mut team = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut one = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..args.uncached {
        let at = Instant::now();
        members = work
            .list_weeks(list_weeks(token, 0)?)
            .await?
            .into_inner()
            .weeks
            .len();
        team.record(at.elapsed().as_micros().max(1) as u64)?;
        let at = Instant::now();
        work.get_week(authed(
            token,
            GetWeekRequest {
                org_id: "bench".into(),
                person_id: format!("m{}", i % args.members.max(1)),
                date: today.clone(),
                min_position: 0,
            },
        )?)
        .await?;
        one.record(at.elapsed().as_micros().max(1) as u64)?;
    }
    say(&format!(
        "week of {} members ({} reads): p50 {:.1} ms, p99 {:.1} ms; one member's week view: p50 {:.1} ms, p99 {:.1} ms",
        members,
        team.len(),
        micros(&team, 0.5),
        micros(&team, 0.99),
        micros(&one, 0.5),
        micros(&one, 0.99)
    ));
    Ok(())
}

/// Runs the benchmark and prints its figures.
pub async fn run_query(args: QueryBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = bench_platform(dir.path()).await?;
    let (store, pg_config, app) = (
        bench.store.clone(),
        bench.pg_config.clone(),
        bench.app.clone(),
    );
    let hash = app.credentials().hash_password(PASSWORD.into()).await?;
    app.credentials()
        .put_account_if_absent("bench", "owner", "owner@bench.test", &hash)
        .await?;

    say(&format!(
        "query: {} members x {} days x {} spans",
        args.members, args.days, args.spans_per_day
    ));
    let started = Instant::now();
    let last = record(&store, &args).await?;
    say(&format!(
        "recorded {} spans in {:.1} s; waiting for the activity read model",
        args.members * args.days * args.spans_per_day,
        started.elapsed().as_secs_f64()
    ));

    // No read timeout: a slow read is what this measures, and the retries
    // below take DEADLINE_EXCEEDED for a read model still catching up.
    let measured = AppConfig {
        read_timeout: Duration::ZERO,
        ..AppConfig::default()
    };
    let cached_addr = gateway(
        &store,
        &pg_config,
        measured.clone(),
        args.portal_dir.clone(),
    )
    .await?;
    let uncached_addr = gateway(
        &store,
        &pg_config,
        AppConfig {
            dashboard_cache_bytes: 0,
            ..measured
        },
        None,
    )
    .await?;
    let channel = Channel::from_shared(format!("http://{cached_addr}"))?
        .connect()
        .await?;
    let token = IdentityClient::new(channel.clone())
        .login(LoginRequest {
            org_id: "bench".into(),
            email: "owner@bench.test".into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner()
        .access_token;
    // Read-your-writes: the first read waits until the last batch is in.
    let mut first = team_dashboard(&token, args.days)?;
    first.get_mut().min_position = last;
    let mut waited = None;
    for _ in 0..120 {
        match ActivityClient::new(channel.clone())
            .get_dashboard(first)
            .await
        {
            Ok(d) => {
                waited = Some(d.into_inner());
                break;
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                first = team_dashboard(&token, args.days)?;
                first.get_mut().min_position = last;
            }
            Err(status) => return Err(status.into()),
        }
    }
    let dashboard = waited.context("the activity read model did not catch up")?;
    wait_for_work(&channel, &token, last).await?;
    let people: std::collections::BTreeSet<_> =
        dashboard.days.iter().map(|d| d.person_id.clone()).collect();
    let summary = ActivityClient::new(channel.clone())
        .get_dashboard_summary(team_dashboard(&token, args.days)?)
        .await?
        .into_inner();
    say(&format!(
        "read model caught up after {:.1} s: {} members, {} member-days; the team summary is {:.1} KiB encoded, the member days {} KiB",
        started.elapsed().as_secs_f64(),
        people.len(),
        dashboard.days.len(),
        prost::Message::encoded_len(&summary) as f64 / 1024.0,
        prost::Message::encoded_len(&dashboard) / 1024
    ));

    // Cached: many callers, one summary.
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let begun = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut client = ActivityClient::new(channel.clone());
        let token = token.clone();
        let latencies = latencies.clone();
        let days = args.days;
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while Instant::now() < deadline {
                let at = Instant::now();
                client
                    .get_dashboard_summary(team_dashboard(&token, days)?)
                    .await?;
                local.record(at.elapsed().as_micros().max(1) as u64)?;
            }
            latencies.lock().await.add(&local)?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = begun.elapsed();
    let cached = latencies.lock().await.clone();
    say(&format!(
        "cached team summary ({} days, {} callers): {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.days,
        args.concurrency,
        cached.len() as f64 / elapsed.as_secs_f64(),
        micros(&cached, 0.5),
        micros(&cached, 0.99),
        cached.max() as f64 / 1000.0
    ));

    // Cached at a fixed rate: each caller sends on its own schedule.
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let begun = Instant::now();
    let interval = Duration::from_secs_f64(args.concurrency as f64 / args.rate.max(1) as f64);
    let per_caller = (args.rate * args.seconds).div_ceil(args.concurrency as u64);
    let mut tasks = Vec::new();
    for caller in 0..args.concurrency {
        let mut client = ActivityClient::new(channel.clone());
        let token = token.clone();
        let latencies = latencies.clone();
        let days = args.days;
        let first = begun + interval.mul_f64(caller as f64 / args.concurrency as f64);
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for k in 0..per_caller {
                let due = first + interval * k as u32;
                tokio::time::sleep_until(due.into()).await;
                client
                    .get_dashboard_summary(team_dashboard(&token, days)?)
                    .await?;
                local.record(due.elapsed().as_micros().max(1) as u64)?;
            }
            latencies.lock().await.add(&local)?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = begun.elapsed();
    let paced = latencies.lock().await.clone();
    say(&format!(
        "cached team summary at {} requests/s asked ({} callers): {:.0} requests/s done, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rate,
        args.concurrency,
        paced.len() as f64 / elapsed.as_secs_f64(),
        micros(&paced, 0.5),
        micros(&paced, 0.99),
        paced.max() as f64 / 1000.0
    ));

    // Uncached: a gateway that keeps no dashboards, one read at a time.
    let channel = Channel::from_shared(format!("http://{uncached_addr}"))?
        .connect()
        .await?;
    let mut client = ActivityClient::new(channel);
    let mut uncached = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..args.uncached {
        let at = Instant::now();
        client
            .get_dashboard_summary(team_dashboard(&token, args.days)?)
            .await?;
        uncached.record(at.elapsed().as_micros().max(1) as u64)?;
    }
    say(&format!(
        "uncached team summary ({} days, {} reads): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.days,
        uncached.len(),
        micros(&uncached, 0.5),
        micros(&uncached, 0.99),
        uncached.max() as f64 / 1000.0
    ));
    let mut days = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..args.uncached.div_ceil(10) {
        let at = Instant::now();
        client
            .get_dashboard(team_dashboard(&token, args.days)?)
            .await?;
        days.record(at.elapsed().as_micros().max(1) as u64)?;
    }
    say(&format!(
        "uncached member days ({} days, {} reads): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.days,
        days.len(),
        micros(&days, 0.5),
        micros(&days, 0.99),
        days.max() as f64 / 1000.0
    ));
    week_figures(&channel_to(cached_addr).await?, &token, &args).await?;
    if args.portal_dir.is_some() {
        let user = "owner@bench.test";
        let fixture = serde_json::json!({
            "url": format!("http://{cached_addr}"),
            "org": "bench",
            "password": PASSWORD,
            "users": { "owner": user, "admin": user, "manager": user, "auditor": user },
        });
        say(&format!(
            "the portal is served at http://{cached_addr}/ (org bench, {user}); Ctrl-C stops\nPORTAL_FIXTURE='{fixture}'"
        ));
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
