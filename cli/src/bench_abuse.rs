//! `trackhrs bench abuse`: one agent's uploads through the gateway (its own
//! nats-server with fsync on every write, its own PostgreSQL), timed three
//! times: alone, while 40 clients log in with wrong passwords as fast as
//! they are answered (the throttle's limits lifted, so every attempt is
//! hashed: the worst case for the database pool), and while another device
//! of the org uploads large batches as fast as it is answered (held to its
//! quota). Prints each phase's success rate and upload latency
//! percentiles, and what the flooding device got through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::Code;
use tonic::metadata::MetadataValue;
use trackhrs_app::AppConfig;
use trackhrs_credentials::AuthConfig;
use trackhrs_nats::{EventStore, StoreConfig};
use trackhrs_platform::{Platform, Settings};
use trackhrs_schemas::agent::v1::agent_ingest_client::AgentIngestClient;
use trackhrs_schemas::agent::v1::{Span, UploadBatchRequest};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;

use crate::bench::say;
use crate::bench_pipeline::{bench_servers, serve_devices};

/// Settings of `trackhrs bench abuse`.
#[derive(clap::Args, Debug, Clone)]
pub struct AbuseBenchArgs {
    /// Uploads timed in each phase (one after another, as an agent sends).
    #[arg(long, default_value_t = 200)]
    pub uploads: u64,
    /// Spans per timed upload.
    #[arg(long, default_value_t = 50)]
    pub batch: u64,
    /// Clients logging in with wrong passwords at once.
    #[arg(long, default_value_t = 40)]
    pub bad_logins: u64,
}

const PASSWORD: &str = "the owner's real passphrase";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Batch `seq` of `spans` spans of one second from `start`, titles of
/// `title_len` characters.
fn batch(device: &str, seq: u64, spans: u64, start: i64, title_len: usize) -> UploadBatchRequest {
    let first = start + (seq as i64 - 1) * spans as i64 * 1000;
    UploadBatchRequest {
        batch_id: format!("{device}-{seq}"),
        device_batch_seq: seq,
        spans: (0..spans as i64)
            .map(|i| Span {
                start_unix_ms: first + i * 1000,
                end_unix_ms: first + (i + 1) * 1000,
                app: "code".into(),
                title: "t".repeat(title_len),
                url: None,
                active: true,
            })
            .collect(),
        retractions: vec![],
    }
}

/// One phase's uploads by the measured agent: how many succeeded, and
/// their latencies.
struct Phase {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

impl Phase {
    fn report(&mut self, name: &str) {
        self.latencies.sort();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies
                .get(i)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let total = self.ok + self.failed;
        say(&format!(
            "{name}: {}/{} uploads succeeded ({:.1} %), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.ok,
            total,
            100.0 * self.ok as f64 / total.max(1) as f64,
            at(0.5),
            at(0.99),
            at(1.0),
        ));
    }
}

/// The measured agent: `args.uploads` uploads one after another, each with
/// an agent's 10 s deadline, from batch `*seq` on.
async fn agent_uploads(
    addr: SocketAddr,
    token: &str,
    args: &AbuseBenchArgs,
    seq: &mut u64,
    start: i64,
) -> anyhow::Result<Phase> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = AgentIngestClient::new(channel);
    let bearer = MetadataValue::try_from(format!("Bearer {token}"))?;
    let mut phase = Phase {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
    };
    for _ in 0..args.uploads {
        let mut request = tonic::Request::new(batch("agent", *seq, args.batch, start, 40));
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        request.set_timeout(Duration::from_secs(10));
        let started = Instant::now();
        match client.upload_batch(request).await {
            Ok(_) => {
                phase.ok += 1;
                *seq += 1;
            }
            Err(_) => phase.failed += 1,
        }
        phase.latencies.push(started.elapsed());
    }
    Ok(phase)
}

/// Runs the benchmark.
pub async fn run_abuse(args: AbuseBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_nats, _pg, client, pg_config) = bench_servers(dir.path(), &[]).await?;
    let config = StoreConfig::with_kek(crate::bench::bench_kek()?);
    trackhrs_nats::provision(&client, &config).await?;
    let store = EventStore::open(client, config).await?;
    let app_config = AppConfig {
        // Every wrong password is hashed: no attempt is answered from the
        // throttle.
        auth: AuthConfig {
            account_failures: u32::MAX,
            address_attempts: u32::MAX,
            ..AuthConfig::default()
        },
        ..AppConfig::default()
    };
    let gateway = Platform::build(
        store,
        pg_config,
        Settings {
            app: app_config,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Settings::default()
        },
    )
    .await?;
    let (tokens, channel, addr, app) = serve_devices(gateway, 2, None).await?;
    let hash = app.credentials().hash_password(PASSWORD.into()).await?;
    app.credentials()
        .put_account_if_absent("bench", "owner", "owner@bench.test", &hash)
        .await?;
    let start = now_ms() - 25 * 24 * 3_600_000;
    let mut seq = 1;
    say(&format!(
        "abuse: {} uploads of {} spans per phase, {} bad log-ins at once, 2 cores",
        args.uploads, args.batch, args.bad_logins
    ));

    let mut alone = agent_uploads(addr, &tokens[0], &args, &mut seq, start).await?;
    alone.report("alone");

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let storm: Vec<_> = (0..args.bad_logins)
        .map(|i| {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            let mut identity = IdentityClient::new(channel.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = identity
                        .login(pb::LoginRequest {
                            org_id: "bench".into(),
                            email: "owner@bench.test".into(),
                            password: format!("wrong password {i}"),
                        })
                        .await;
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let storm_started = Instant::now();
    let mut stormed = agent_uploads(addr, &tokens[0], &args, &mut seq, start).await?;
    stop.store(true, Ordering::Relaxed);
    for task in storm {
        task.await?;
    }
    stormed.report(&format!("{} bad log-ins", args.bad_logins));
    say(&format!(
        "  bad log-ins answered: {} ({:.0}/s)",
        attempts.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed) as f64 / storm_started.elapsed().as_secs_f64()
    ));

    // One device floods with batches of 500 spans and long titles (about
    // 170 KiB), as fast as it is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let mut flooder = AgentIngestClient::new(channel.clone());
        let bearer = MetadataValue::try_from(format!("Bearer {}", tokens[1]))?;
        tokio::spawn(async move {
            let (mut seq, mut stored, mut refused, mut bytes) = (1u64, 0u64, 0u64, 0u64);
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = batch("flood", seq, 500, start, 300);
                let size = prost::Message::encoded_len(&request) as u64;
                let mut request = tonic::Request::new(request);
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                match flooder.upload_batch(request).await {
                    Ok(_) => {
                        stored += 1;
                        bytes += size;
                        seq += 1;
                    }
                    Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
                    Err(_) => failed += 1,
                }
            }
            (stored, refused, failed, bytes)
        })
    };
    let flood_started = Instant::now();
    let mut flooded = agent_uploads(addr, &tokens[0], &args, &mut seq, start).await?;
    stop.store(true, Ordering::Relaxed);
    let (stored, refused, failed, bytes) = flood.await?;
    flooded.report("one device flooding");
    say(&format!(
        "  the flood: {stored} batches stored ({:.1} MiB, {:.0} KiB/s), {refused} refused over quota, {failed} failed otherwise, in {:.1} s",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / 1024.0 / flood_started.elapsed().as_secs_f64(),
        flood_started.elapsed().as_secs_f64()
    ));
    Ok(())
}
