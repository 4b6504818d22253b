//! `trackhrs bench store`: event-store throughput and aggregate load latency,
//! measured against real nats-servers started for the run, once with the
//! server's default fsync and once with `sync_interval: always`.

use std::future::IntoFuture as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use prost::Message as _;
use serde_json::{Map, Value, json};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_harness::{NatsOptions, NatsServer};
use trackhrs_kek::Keyring;
use trackhrs_nats::{CommitMeta, EventStore, Loaded, StoreConfig};
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

/// Arguments of `bench store`.
#[derive(clap::Args)]
pub struct StoreBenchArgs {
    /// Aggregates of 10 events in the load stream.
    #[arg(long, default_value_t = 100_000)]
    aggregates: u64,
    /// Events per aggregate in the load stream.
    #[arg(long, default_value_t = 10)]
    events_per_aggregate: u64,
    /// Aggregates of 100 events in the load stream.
    #[arg(long, default_value_t = 1_000)]
    big_aggregates: u64,
    /// Events per big aggregate.
    #[arg(long, default_value_t = 100)]
    big_events: u64,
    /// Appends measured per fsync setting.
    #[arg(long, default_value_t = 100_000)]
    appends: u64,
    /// Independent aggregates the appends spread over.
    #[arg(long, default_value_t = 10_000)]
    append_aggregates: u64,
    /// Aggregates sampled for load latency.
    #[arg(long, default_value_t = 2_000)]
    load_samples: u64,
    /// Messages per atomic batch in the group-commit measurement.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent appenders, and acknowledgements in flight for raw publishes.
    #[arg(long, default_value_t = 1_000)]
    concurrency: usize,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    (h.value_at_quantile(q) as f64 / 1000.0 * 1000.0).round() / 1000.0
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// User plus system time from a `/proc/<pid>/stat` line, all threads, in
/// clock ticks (see [`clock_ticks`]): its 14th and 15th fields.
pub(crate) fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses: the fields start after its last ')', with field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |field: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(field - 3)
            .context("unexpected /proc stat")?
            .parse()?)
    };
    Ok(ticks(14)? + ticks(15)?)
}

/// The kernel's clock ticks per second, in which `/proc` counts CPU time.
pub(crate) fn clock_ticks() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A realistic one-event commit, as the store writes it.
fn commit_bytes(aggregate_id: &str, version: u64, command_id: &str) -> Vec<u8> {
    Commit {
        command_id: command_id.into(),
        org_id: "fill".into(),
        aggregate_type: "organization".into(),
        aggregate_id: aggregate_id.into(),
        actor: "user:0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4a".into(),
        correlation_id: "0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4b".into(),
        causation_id: "0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4c".into(),
        recorded_at_micros: 1_795_000_000_000_000,
        events: vec![EventEnvelope {
            event_type: "SeatsChanged".into(),
            schema_version: 1,
            aggregate_version: version,
            payload: serde_json::to_vec(&json!({"seats": 10 + version})).expect("json"),
        }],
        request_digest: "3f8a6c1e9b2d4f7a0c5e8b1d3f6a9c2e4b7d0f3a6c9e2b5d8f1a4c7e0b3d6f9a".into(),
    }
    .encode_to_vec()
}

pub(crate) async fn publish_all(
    js: &jetstream::Context,
    messages: impl Iterator<Item = (String, Vec<u8>)>,
    window: usize,
    with_msg_id: bool,
) -> anyhow::Result<u64> {
    let mut in_flight = FuturesUnordered::new();
    let mut n = 0;
    for (subject, payload) in messages {
        if in_flight.len() >= window {
            in_flight.next().await.context("ack stream")??;
        }
        let ack = if with_msg_id {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
            js.publish_with_headers(subject, headers, payload.into())
                .await?
        } else {
            js.publish(subject, payload.into()).await?
        };
        in_flight.push(ack.into_future());
        n += 1;
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    Ok(n)
}

async fn raw_publish(
    js: &jetstream::Context,
    args: &StoreBenchArgs,
    tag: &str,
    with_msg_id: bool,
) -> anyhow::Result<f64> {
    js.create_or_update_stream(stream::Config {
        name: format!("BENCH_RAW_{tag}_{with_msg_id}"),
        subjects: vec![format!("raw{tag}{with_msg_id}.>")],
        ..Default::default()
    })
    .await?;
    let payload = commit_bytes("a0", 1, "0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4d");
    let start = Instant::now();
    let n = publish_all(
        js,
        (0..args.appends).map(|i| {
            let subject = format!("raw{tag}{with_msg_id}.a{}", i % args.append_aggregates);
            (subject, payload.clone())
        }),
        args.concurrency,
        with_msg_id,
    )
    .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The append pattern without the event store: the same workers and
/// aggregates, each publish carrying `Nats-Msg-Id` and
/// `Nats-Expected-Last-Subject-Sequence` from the previous ack. Separates
/// the server's cost of optimistic concurrency from the store's own work.
async fn raw_occ(js: &jetstream::Context, args: &StoreBenchArgs, tag: &str) -> anyhow::Result<f64> {
    js.create_or_update_stream(stream::Config {
        name: format!("BENCH_OCC_{tag}"),
        subjects: vec![format!("occ{tag}.>")],
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(commit_bytes(
        "a0",
        1,
        "0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4d",
    ));
    let workers = args.concurrency.min(args.append_aggregates as usize).max(1);
    let per_worker = args.appends / workers as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (js, payload) = (js.clone(), payload.clone());
        let mut subjects: Vec<(String, u64)> = (w as u64..args.append_aggregates)
            .step_by(workers)
            .map(|a| (format!("occ{tag}.a{a}"), 0))
            .collect();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                let k = (i % subjects.len() as u64) as usize;
                let (subject, last) = &mut subjects[k];
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last.to_string().as_str(),
                );
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await?
                    .await?;
                *last = ack.sequence;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_worker * workers as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Atomic batch publish (ADR-50, nats-server 2.12+): `batch` messages to
/// distinct subjects committed together, each with `Nats-Msg-Id` and
/// `Nats-Expected-Last-Subject-Sequence`, several batches in flight. Measures
/// whether the server carries many appends per flush (group commit).
async fn atomic_batches(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &StoreBenchArgs,
    tag: &str,
) -> anyhow::Result<f64> {
    js.create_or_update_stream(stream::Config {
        name: format!("BENCH_BATCH_{tag}"),
        subjects: vec![format!("batch{tag}.>")],
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(commit_bytes(
        "a0",
        1,
        "0195f0a4-7d1c-7b5e-9a51-6c0e2f1d3b4d",
    ));
    let batch = args.batch.max(2);
    let batches = (args.appends / batch).max(1);
    let lanes = 16u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (client, payload) = (client.clone(), payload.clone());
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut b = lane;
            while b < batches {
                let id = uuid::Uuid::now_v7().simple().to_string();
                for i in 0..batch {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Batch-Id", id.as_str());
                    h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                    h.insert("Nats-Msg-Id", format!("{id}-{i}").as_str());
                    // Each subject is new: expected last sequence 0.
                    h.insert("Nats-Expected-Last-Subject-Sequence", "0");
                    let subject = format!("batch{tag}.b{b}.m{i}");
                    if i + 1 < batch {
                        client
                            .publish_with_headers(subject, h, payload.clone())
                            .await?;
                    } else {
                        h.insert("Nats-Batch-Commit", "1");
                        let reply = client
                            .request_with_headers(subject, h, payload.clone())
                            .await?;
                        let ack: Value = serde_json::from_slice(&reply.payload)?;
                        anyhow::ensure!(ack.get("error").is_none(), "batch refused: {ack}");
                        anyhow::ensure!(ack["batch"] == json!(id), "not a batch ack: {ack}");
                    }
                }
                b += lanes;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((batches * batch) as f64 / start.elapsed().as_secs_f64())
}

async fn appends(
    store: &EventStore,
    args: &StoreBenchArgs,
    org: &str,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    let org = Token::new(org)?;
    let workers = args.concurrency.min(args.append_aggregates as usize).max(1);
    let per_worker = args.appends / workers as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, org) = (store.clone(), org.clone());
        let ids: Vec<Token> = (w as u64..args.append_aggregates)
            .step_by(workers)
            .map(|a| Token::new(format!("a{a}")))
            .collect::<Result<_, _>>()?;
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            for i in 0..per_worker {
                let id = &ids[(i % ids.len() as u64) as usize];
                let t = Instant::now();
                let loaded: Loaded<Organization> = store.load(&org, id).await?;
                let event = OrgEvent::SeatsChanged {
                    seats: 10 + i as u32,
                };
                let meta = CommitMeta::new(uuid::Uuid::now_v7().to_string(), "user:bench", 1);
                store.append(&org, id, &loaded, vec![event], &meta).await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = hist();
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok((
        (per_worker * workers as u64) as f64 / start.elapsed().as_secs_f64(),
        all,
    ))
}

async fn fill(js: &jetstream::Context, args: &StoreBenchArgs) -> anyhow::Result<u64> {
    let rounds = args.events_per_aggregate.max(args.big_events);
    let messages = (0..rounds).flat_map(move |r| {
        let small = (r < args.events_per_aggregate)
            .then_some(0..args.aggregates)
            .into_iter()
            .flatten()
            .map(move |a| {
                (
                    format!("evt.fill.organization.a{a}"),
                    commit_bytes(&format!("a{a}"), r + 1, &format!("f-a{a}-{r}")),
                )
            });
        let big = (r < args.big_events)
            .then_some(0..args.big_aggregates)
            .into_iter()
            .flatten()
            .map(move |b| {
                (
                    format!("evt.fill.organization.b{b}"),
                    commit_bytes(&format!("b{b}"), r + 1, &format!("f-b{b}-{r}")),
                )
            });
        small.chain(big)
    });
    publish_all(js, messages, 4096, false).await
}

struct Loads {
    cold10: Histogram<u64>,
    warm10: Histogram<u64>,
    cold100: Histogram<u64>,
    warm100: Histogram<u64>,
}

async fn loads(client: async_nats::Client, args: &StoreBenchArgs) -> anyhow::Result<Loads> {
    // A new store instance: its in-process cache starts empty.
    let store = EventStore::open(client, StoreConfig::with_kek(bench_kek()?)).await?;
    let org = Token::new("fill")?;
    let step = (args.aggregates / args.load_samples.max(1)).max(1);
    let small: Vec<Token> = (0..args.aggregates)
        .step_by(step as usize)
        .map(|a| Token::new(format!("a{a}")))
        .collect::<Result<_, _>>()?;
    let big: Vec<Token> = (0..args.big_aggregates.min(args.load_samples))
        .map(|b| Token::new(format!("b{b}")))
        .collect::<Result<_, _>>()?;
    let mut out = Loads {
        cold10: hist(),
        warm10: hist(),
        cold100: hist(),
        warm100: hist(),
    };
    for (ids, cold, warm, want) in [
        (
            &small,
            &mut out.cold10,
            &mut out.warm10,
            args.events_per_aggregate,
        ),
        (&big, &mut out.cold100, &mut out.warm100, args.big_events),
    ] {
        for h in [cold, warm] {
            for id in ids {
                let t = Instant::now();
                let loaded: Loaded<Organization> = store.load(&org, id).await?;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                anyhow::ensure!(
                    loaded.version == want,
                    "{id} loaded at v{}, not v{want}",
                    loaded.version
                );
            }
        }
    }
    Ok(out)
}

async fn measure(
    server: &NatsServer,
    args: &StoreBenchArgs,
    tag: &str,
    fill_first: bool,
    report: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let suffix = if tag == "sync" { "_sync" } else { "" };
    let client = server.connect().await?;
    let config = StoreConfig {
        state_cache_capacity: (args.append_aggregates + args.aggregates + args.big_aggregates) * 2,
        ..StoreConfig::with_kek(bench_kek()?)
    };
    trackhrs_nats::provision(&client, &config).await?;
    let js = jetstream::new(client.clone());

    let raw = raw_publish(&js, args, tag, false).await?;
    say(&format!("[{tag}] raw publish: {raw:.0} msg/s"));
    report.insert(format!("raw_publish_per_s{suffix}"), json!(raw.round()));
    let raw_id = raw_publish(&js, args, tag, true).await?;
    say(&format!(
        "[{tag}] raw publish with Nats-Msg-Id: {raw_id:.0} msg/s"
    ));
    report.insert(
        format!("raw_publish_msg_id_per_s{suffix}"),
        json!(raw_id.round()),
    );

    let occ = raw_occ(&js, args, tag).await?;
    say(&format!(
        "[{tag}] raw publish with concurrency control headers, one in flight per aggregate: {occ:.0} msg/s"
    ));
    report.insert(format!("raw_occ_publish_per_s{suffix}"), json!(occ.round()));

    let batched = atomic_batches(&client, &js, args, tag).await?;
    say(&format!(
        "[{tag}] atomic batch publish ({} per batch, 16 batches in flight): {batched:.0} msg/s",
        args.batch
    ));
    report.insert(
        format!("atomic_batch_publish_per_s{suffix}"),
        json!(batched.round()),
    );

    // Appends one by one, then with group commit (atomic batches).
    for (group_max, label) in [(1, ""), (args.batch as usize, "_group")] {
        let config = StoreConfig {
            group_commit_max: group_max,
            ..config.clone()
        };
        let store = EventStore::open(client.clone(), config).await?;
        let (rate, h) = appends(&store, args, &format!("bench{tag}{group_max}")).await?;
        say(&format!(
            "[{tag}] append (group commit max {group_max}): {rate:.0}/s, p50 {} ms, p99 {} ms",
            ms(&h, 0.5),
            ms(&h, 0.99)
        ));
        report.insert(format!("append_per_s{label}{suffix}"), json!(rate.round()));
        report.insert(format!("append_p50_ms{label}{suffix}"), json!(ms(&h, 0.5)));
        report.insert(format!("append_p99_ms{label}{suffix}"), json!(ms(&h, 0.99)));
    }

    if fill_first {
        let start = Instant::now();
        let n = fill(&js, args).await?;
        say(&format!(
            "[{tag}] filled {n} scattered events in {:.1} s",
            start.elapsed().as_secs_f64()
        ));
    }
    let events = js
        .get_stream("TRACKHRS_EVENTS")
        .await?
        .info()
        .await?
        .state
        .messages;
    report.insert("events".into(), json!(events));
    let l = loads(client, args).await?;
    say(&format!(
        "[{tag}] load10 cold p99 {} ms, warm p50 {} / p99 {} ms; load100 cold p99 {} ms, warm p99 {} ms ({events} events in the stream)",
        ms(&l.cold10, 0.99),
        ms(&l.warm10, 0.5),
        ms(&l.warm10, 0.99),
        ms(&l.cold100, 0.99),
        ms(&l.warm100, 0.99)
    ));
    report.insert(format!("load10_p50_ms{suffix}"), json!(ms(&l.warm10, 0.5)));
    report.insert(format!("load10_p99_ms{suffix}"), json!(ms(&l.warm10, 0.99)));
    report.insert(
        format!("load10_cold_p99_ms{suffix}"),
        json!(ms(&l.cold10, 0.99)),
    );
    report.insert(
        format!("load100_p99_ms{suffix}"),
        json!(ms(&l.warm100, 0.99)),
    );
    report.insert(
        format!("load100_cold_p99_ms{suffix}"),
        json!(ms(&l.cold100, 0.99)),
    );
    Ok(())
}

/// Runs the store benchmark and prints one JSON object as the last line.
pub async fn run_store(args: StoreBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("js");
    let mut report = Map::new();
    {
        let server = NatsServer::start_with(NatsOptions {
            store_dir: Some(store_dir.clone()),
            ..Default::default()
        })
        .await?;
        measure(&server, &args, "default", true, &mut report).await?;
    }
    // The same store, restarted with fsync on every write.
    let server = NatsServer::start_with(NatsOptions {
        store_dir: Some(store_dir),
        sync_always: true,
        ..Default::default()
    })
    .await?;
    measure(&server, &args, "sync", false, &mut report).await?;
    report.insert(
        "cores".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    report.insert(
        "nats_server".into(),
        json!(server.connect().await?.server_info().version),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    say(&serde_json::to_string(&Value::Object(report))?);
    Ok(())
}

/// The key-encryption key of a bench's own, throw-away store: random and
/// held in memory only.
pub fn bench_kek() -> anyhow::Result<std::sync::Arc<Keyring>> {
    Ok(std::sync::Arc::new(Keyring::from_text(
        &Keyring::generate(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::{clock_ticks, cpu_ticks};

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194304 90 0 0 0 1234 56 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat).unwrap(), 1234 + 56);
        assert!(cpu_ticks("4242 (cut short) S 1").is_err());
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ticks(&own).is_ok());
        assert!(clock_ticks().unwrap() > 0);
    }
}
