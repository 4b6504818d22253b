//! The operator commands against real servers: `projections status`,
//! `rebuild` of every read model (progress, switch, old version dropped), `dlq list` and
//! `dlq replay`.

mod common;

use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trackhrs_commands::CommandHandler;
use trackhrs_domain::Token;
use trackhrs_domain::activity::{
    ActivityCommand, DeviceActivity, DeviceStatus, IngestLimits, Privacy, SpanInput,
};
use trackhrs_harness::{NatsServer, TestDb, wait_until};
use trackhrs_nats::{CommitMeta, EventStore, StoreConfig};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn trackhrs(args: &[&str], nats: &str, db: &str) -> Output {
    common::trackhrs(args, &common::platform_env(nats, db))
}

/// Batches `seqs` of device d1, one 10-minute span each, an hour apart.
async fn record_batches(store: &EventStore, seqs: std::ops::RangeInclusive<u64>) {
    let handler = CommandHandler::new(store.clone());
    let start = now_ms() - 5 * 24 * 3_600_000;
    for seq in seqs {
        let command = ActivityCommand::RecordBatch {
            device: DeviceStatus::Active,
            member: Token::new("p1").unwrap(),
            batch_id: format!("b{seq}"),
            seq,
            spans: vec![SpanInput {
                start_ms: start + seq as i64 * 3_600_000,
                end_ms: start + seq as i64 * 3_600_000 + 600_000,
                app: "code".into(),
                title: "main.rs".into(),
                url: None,
                active: true,
            }],
            retractions: vec![],
            privacy: Privacy {
                titles: true,
                urls: false,
            },
            limits: IngestLimits {
                now_ms: now_ms(),
                max_skew_ms: 60_000,
                horizon_ms: 30 * 24 * 3_600_000,
                max_spans: 10,
            },
        };
        handler
            .execute::<DeviceActivity>(
                &Token::new("acme").unwrap(),
                &Token::new("d1").unwrap(),
                command,
                &CommitMeta::new(format!("b{seq}"), "test", now_ms() * 1000),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rebuild_and_dead_letters_from_the_command_line() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.connect().await.unwrap();
    let store = EventStore::provision_and_open(
        client.clone(),
        StoreConfig::with_kek(trackhrs_harness::test_kek()),
    )
    .await
    .unwrap();
    let db = TestDb::create().await.unwrap();
    let pg = db.connect().await.unwrap();
    let (url, conn) = (nats.url(), db.connection_string().to_owned());

    record_batches(&store, 1..=3).await;
    let js = async_nats::jetstream::new(client);
    js.publish("evt.acme.device_activity.garbled", "not a commit".into())
        .await
        .unwrap()
        .await
        .unwrap();
    record_batches(&store, 4..=5).await;
    let last = store.last_sequence().await.unwrap();

    let mut worker = common::spawn_worker(&url, &conn);
    let caught_up = wait_until(Duration::from_secs(60), || async {
        let row = pg
            .query_opt(
                "SELECT position FROM trackhrs_catalog.projection_versions \
                 WHERE name = 'activity' AND state = 'live'",
                &[],
            )
            .await
            .ok()??;
        (row.get::<_, i64>(0) as u64 >= last).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the worker did not catch up");

    let status =
        String::from_utf8(trackhrs(&["projections", "status"], &url, &conn).stdout).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("activity"))
        .unwrap_or_else(|| panic!("no activity line in:\n{status}"));
    assert!(line.contains("live"), "{line}");

    let letters = String::from_utf8(trackhrs(&["dlq", "list"], &url, &conn).stdout).unwrap();
    let letter: serde_json::Value = serde_json::from_str(
        letters
            .lines()
            .find(|l| l.contains("\"activity\""))
            .unwrap_or_else(|| panic!("no activity dead letter in:\n{letters}")),
    )
    .unwrap();
    assert_eq!(letter["subject"], "evt.acme.device_activity.garbled");
    let replay =
        String::from_utf8(trackhrs(&["dlq", "replay", "activity"], &url, &conn).stdout).unwrap();
    assert!(replay.contains("still failing 1"), "{replay}");

    // The rebuild builds v2 beside the running v1, switches, and drops v1.
    let rebuilt =
        String::from_utf8(trackhrs(&["rebuild", "activity"], &url, &conn).stdout).unwrap();
    assert!(rebuilt.contains("activity v2 is live"), "{rebuilt}");
    assert!(rebuilt.contains("dropped activity v1"), "{rebuilt}");
    let versions: Vec<(i64, String)> = pg
        .query(
            "SELECT version, state FROM trackhrs_catalog.projection_versions WHERE name = 'activity'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(versions, vec![(2, "live".to_owned())]);
    let ms: i64 = pg
        .query_one("SELECT sum(ms)::int8 FROM proj_activity_v2.daily", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ms,
        5 * 600_000,
        "the rebuilt read model holds all five batches"
    );

    // Every read model rebuilds the same way, policies too.
    let pg_config: tokio_postgres::Config = conn.parse().unwrap();
    let others: Vec<String> = trackhrs_platform::read_models(&store, &pg_config)
        .iter()
        .map(|r| r.name())
        .filter(|name| name != "activity")
        .collect();
    assert!(others.len() >= 4, "{others:?}");
    for name in &others {
        let rebuilt =
            String::from_utf8(trackhrs(&["rebuild", name.as_str()], &url, &conn).stdout).unwrap();
        assert!(rebuilt.contains(&format!("{name} v2 is live")), "{rebuilt}");
        assert!(rebuilt.contains(&format!("dropped {name} v1")), "{rebuilt}");
    }
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(["rebuild", "nonsense"])
        .envs(common::platform_env(&url, &conn))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("the projections are"),
        "{unknown:?}"
    );

    // A worker started by newer code (here: v2 marked as built by code
    // version 0) builds the next version beside the live one, switches, and
    // drops the old one by itself.
    worker.kill().unwrap();
    worker.wait().unwrap();
    pg.batch_execute(
        "UPDATE trackhrs_catalog.projection_versions SET code_version = 0 \
         WHERE name = 'activity' AND version = 2",
    )
    .await
    .unwrap();
    let mut worker = common::spawn_worker(&url, &conn);
    let upgraded = wait_until(Duration::from_secs(60), || async {
        let rows = pg
            .query(
                "SELECT version, state FROM trackhrs_catalog.projection_versions \
                 WHERE name = 'activity' ORDER BY version",
                &[],
            )
            .await
            .ok()?;
        let versions: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        (versions == vec![(3, "live".to_owned())]).then_some(())
    })
    .await;
    assert!(
        upgraded.is_some(),
        "the classifier upgrade did not rebuild and switch by itself"
    );
    let ms: i64 = pg
        .query_one("SELECT sum(ms)::int8 FROM proj_activity_v3.daily", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ms, 5 * 600_000);

    // After switching by itself, the worker still follows the live version:
    // an operator's rebuild retires v3, and v4 gets the new batches.
    let rebuilt =
        String::from_utf8(trackhrs(&["rebuild", "activity"], &url, &conn).stdout).unwrap();
    assert!(rebuilt.contains("activity v4 is live"), "{rebuilt}");
    record_batches(&store, 6..=6).await;
    let last = store.last_sequence().await.unwrap();
    let followed = wait_until(Duration::from_secs(60), || async {
        let row = pg
            .query_opt(
                "SELECT position FROM trackhrs_catalog.projection_versions \
                 WHERE name = 'activity' AND version = 4",
                &[],
            )
            .await
            .ok()??;
        (row.get::<_, i64>(0) as u64 >= last).then_some(())
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(followed.is_some(), "nothing applied the new batch to v4");
}
