//! The projection worker (`trackhrs projections run`, a real process) is
//! killed with SIGKILL at random points, ten times, while 100k events flow
//! into the log; its read model must then equal a clean single pass over the
//! same log: nothing lost, nothing counted twice.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_harness::{NatsServer, TestDb, wait_until};
use trackhrs_nats::{CommitMeta, EventStore, StoreConfig};
use trackhrs_projections::activity::Activity;
use trackhrs_projections::{Runner, RunnerConfig, Waited, wait_for_position};

const DEVICES: u64 = 50;
const BATCHES_PER_DEVICE: u64 = 20;
const SPANS_PER_BATCH: usize = 100;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Appends every device's batches (each commit: 1 + 100 events).
async fn produce(store: EventStore, devices: std::ops::Range<u64>) {
    let handler = CommandHandler::new(store);
    let org = Token::new("acme").unwrap();
    let base = now_ms() - 20 * 24 * 3_600_000;
    for d in devices {
        let device = Token::new(format!("dev{d}")).unwrap();
        for seq in 1..=BATCHES_PER_DEVICE {
            let start = base + ((seq - 1) * SPANS_PER_BATCH as u64 * 60_000) as i64;
            let spans = (0..SPANS_PER_BATCH)
                .map(|i| SpanInput {
                    start_ms: start + i as i64 * 60_000,
                    end_ms: start + (i as i64 + 1) * 60_000,
                    app: ["code", "firefox", "slack", "zoom"][i % 4].into(),
                    title: format!("window {} of device {d}", i % 7),
                    url: None,
                    active: i % 6 != 5,
                })
                .collect();
            let command = ActivityCommand::RecordBatch {
                device: DeviceStatus::Active,
                member: Token::new(format!("person{}", d % 10)).unwrap(),
                batch_id: format!("dev{d}-{seq}"),
                seq,
                spans,
                privacy: Privacy {
                    titles: true,
                    urls: true,
                },
                limits: IngestLimits {
                    now_ms: now_ms(),
                    max_skew_ms: 60_000,
                    horizon_ms: 30 * 24 * 3_600_000,
                    max_spans: SPANS_PER_BATCH,
                },
            };
            let meta = CommitMeta::new(format!("dev{d}-{seq}"), "test", now_ms() * 1000);
            handler
                .execute::<DeviceActivity>(&org, &device, command, &meta)
                .await
                .unwrap();
        }
    }
}

async fn position(pg: &tokio_postgres::Client, version: u32) -> u64 {
    pg.query_opt(
        "SELECT position FROM trackhrs_catalog.projection_versions WHERE name = 'activity' AND version = $1",
        &[&(version as i64)],
    )
    .await
    .ok()
    .flatten()
    .map_or(0, |r| r.get::<_, i64>(0) as u64)
}

/// Every row of a version's tables, in a stable order.
async fn tables(pg: &tokio_postgres::Client, version: u32) -> Vec<String> {
    let schema = format!("proj_activity_v{version}");
    let mut out = Vec::new();
    for (table, order) in [
        ("daily", "org_id, day, person_id, activity_id, active"),
        ("activities", "org_id, activity_id"),
        ("classifications", "org_id, rules_version, activity_id"),
        (
            "rollup",
            "org_id, rules_version, day, person_id, category, app, score",
        ),
        ("org_state", "org_id"),
    ] {
        for row in pg
            .query(
                &format!("SELECT t::text FROM {schema}.{table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap()
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_killed_ten_times_ends_where_a_clean_pass_ends() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.connect().await.unwrap();
    let store =
        EventStore::provision_and_open(client, StoreConfig::with_kek(trackhrs_harness::test_kek()))
            .await
            .unwrap();
    let db = TestDb::create().await.unwrap();
    let pg = db.connect().await.unwrap();

    // 1,000 commits of 101 events from 50 devices, four producers at once.
    let producers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(produce(store, (i * DEVICES / 4)..((i + 1) * DEVICES / 4)))
        })
        .collect();

    let mut worker = common::spawn_worker(&nats.url(), db.connection_string());
    let mut kills = Vec::new();
    while kills.len() < 10 {
        // Short enough that several kills land while the log is being applied.
        let pause = rand::rng().random_range(100..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        kills.push(position(&pg, 1).await);
        worker = common::spawn_worker(&nats.url(), db.connection_string());
    }
    for p in producers {
        p.await.unwrap();
    }
    let last = store.last_sequence().await.unwrap();
    let events = DEVICES * BATCHES_PER_DEVICE * (SPANS_PER_BATCH as u64 + 1);
    assert_eq!(last, DEVICES * BATCHES_PER_DEVICE, "one commit per batch");
    // The killed worker, restarted, catches up with the whole log.
    let caught_up = wait_until(Duration::from_secs(180), || async {
        (position(&pg, 1).await >= last).then_some(())
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(
        caught_up.is_some(),
        "the worker did not catch up after the kills {kills:?}"
    );
    assert!(
        kills.iter().any(|p| *p > 0 && *p < last),
        "no kill landed while events were flowing: {kills:?}"
    );

    // A clean single pass over the same log, as version 2.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let clean = tokio::spawn(
        Runner::new(
            Activity::new(2),
            store.clone(),
            db.connection_string().parse().unwrap(),
            RunnerConfig {
                batch_wait: Duration::from_millis(100),
                ..RunnerConfig::default()
            },
        )
        .run(async {
            let _ = stopped.await;
        }),
    );
    let reached = wait_until(Duration::from_secs(180), || async {
        (position(&pg, 2).await >= last).then_some(())
    })
    .await;
    let _ = stop.send(());
    clean.await.unwrap().unwrap();
    assert!(reached.is_some(), "the clean pass did not finish");

    let killed = tables(&pg, 1).await;
    let single = tables(&pg, 2).await;
    assert!(!killed.is_empty());
    assert_eq!(killed.len(), single.len(), "row counts differ");
    assert!(killed == single, "the read models differ after the kills");
    let total: i64 = pg
        .query_one("SELECT sum(ms)::int8 FROM proj_activity_v1.daily", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        (DEVICES * BATCHES_PER_DEVICE) as i64 * SPANS_PER_BATCH as i64 * 60_000,
        "{events} events: time lost or counted twice"
    );
    // Live readers would have seen version 1 all along.
    let waited = wait_for_position(&pg, "activity", last, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Reached(_)));
}
