//! The raw-timeline read model: the newest version of each event, events
//! and buckets retracted on the device dropped, the same rows however the
//! commits are batched, and a member's erased data stored as NULL.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use trackhrs_domain::PersonId;
use trackhrs_domain::activity::{DeviceStatus, Privacy};
use trackhrs_domain::timeline::{
    DeviceTimeline, TimelineChange, TimelineCommand, TimelineEventInput, TimelineLimits,
};
use trackhrs_harness::TestDb;
use trackhrs_nats::CommitMeta;
use trackhrs_projections::timeline::{NAME, Timeline, TimelineRow, device_events};
use trackhrs_projections::{Runner, RunnerConfig, Waited, live_schema, wait_for_position};

const BASE_US: i64 = 1_800_000_000_000_000;

fn event(bucket: &str, key: &str, version: u64, data: serde_json::Value) -> TimelineChange {
    TimelineChange::Event(TimelineEventInput {
        bucket: bucket.into(),
        bucket_type: if bucket == "afk" {
            "afkstatus"
        } else {
            "app.editor.activity"
        }
        .into(),
        client: format!("aw-watcher-{bucket}"),
        key: key.into(),
        version,
        start_us: BASE_US + version as i64,
        end_us: BASE_US + 1_000_000,
        data: data.to_string(),
    })
}

/// Records `changes` as the device's batch `seq` of member `member`;
/// returns its stream position.
async fn record(
    env: &Env,
    device: &str,
    member: &str,
    seq: u64,
    changes: Vec<TimelineChange>,
) -> u64 {
    let command = TimelineCommand::RecordChanges {
        device: DeviceStatus::Active,
        member: PersonId::new(member).unwrap(),
        batch_id: format!("{device}-{seq}"),
        seq,
        changes,
        privacy: Privacy {
            titles: true,
            urls: true,
        },
        limits: TimelineLimits {
            now_ms: BASE_US / 1000 + 60_000,
            max_skew_ms: 60_000,
            horizon_ms: 30 * 24 * 3_600_000,
            max_changes: 100,
        },
    };
    let meta = CommitMeta::new(format!("{device}-{seq}"), "device:test", now_micros());
    env.handler
        .execute::<DeviceTimeline>(&tok("acme"), &tok(device), command, &meta)
        .await
        .unwrap()
        .appended
        .unwrap()
        .position
}

/// Builds the read model into `db` with batches of up to `batch_max`
/// commits and returns device `device`'s rows.
async fn build(
    env: &Env,
    db: &TestDb,
    batch_max: usize,
    last: u64,
    device: &str,
) -> Vec<TimelineRow> {
    let runner = Runner::new(
        Timeline::new(1),
        env.store.clone(),
        db.connection_string().parse().unwrap(),
        RunnerConfig {
            batch_max,
            batch_wait: Duration::from_millis(20),
            ..RunnerConfig::default()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let pg = db.connect().await.unwrap();
    let waited = wait_for_position(&pg, NAME, last, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(matches!(waited, Waited::Reached(_)), "{waited:?}");
    let schema = live_schema(&pg, NAME).await.unwrap().unwrap();
    let (rows, truncated) = device_events(
        &pg,
        &schema,
        "acme",
        device,
        (i64::MIN, i64::MAX),
        (i64::MAX, i64::MAX),
    )
    .await
    .unwrap();
    assert!(!truncated);
    // Capped by count, or by bytes of data: cut, and said so.
    if let Some(fewer) = rows.len().checked_sub(1) {
        let cut = |caps| device_events(&pg, &schema, "acme", device, (i64::MIN, i64::MAX), caps);
        let (first, truncated) = cut((fewer as i64, i64::MAX)).await.unwrap();
        assert!(truncated);
        assert_eq!(first, rows[..fewer]);
        // Fewer bytes than the first event weighs: none, and cut.
        let (none, truncated) = cut((i64::MAX, 64)).await.unwrap();
        assert!(truncated && none.is_empty(), "{none:?}");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_versions_are_kept_and_retractions_drop_events_however_batched() {
    let env = Env::start().await;
    record(
        &env,
        "d1",
        "m1",
        1,
        vec![
            event("vim", "s-1", 1, json!({"file": "a.rs"})),
            event("vim", "s-2", 1, json!({"file": "b.rs"})),
            event("afk", "s-3", 1, json!({"status": "afk"})),
        ],
    )
    .await;
    record(
        &env,
        "d1",
        "m1",
        2,
        vec![
            event("vim", "s-1", 2, json!({"file": "a2.rs"})),
            TimelineChange::RetractEvent {
                bucket: "vim".into(),
                key: "s-2".into(),
            },
        ],
    )
    .await;
    record(
        &env,
        "d1",
        "m1",
        3,
        vec![
            // Within one commit: the bucket's earlier events go, a later one stays.
            event("afk", "s-4", 1, json!({"status": "not-afk"})),
            TimelineChange::RetractBucket {
                bucket: "afk".into(),
            },
            event("afk", "s-5", 1, json!({"status": "afk"})),
            // A version older than the one kept never replaces it.
            event("vim", "s-1", 1, json!({"file": "a.rs"})),
            // Retracted and recorded again within the commit: recorded.
            TimelineChange::RetractEvent {
                bucket: "vim".into(),
                key: "s-6".into(),
            },
            event("vim", "s-6", 1, json!({"file": "c.rs"})),
        ],
    )
    .await;
    // Another device's events are its own.
    let last = record(
        &env,
        "d2",
        "m2",
        1,
        vec![event("vim", "s-1", 1, json!({"file": "x.rs"}))],
    )
    .await;

    let one_by_one = build(&env, &env.db, 1, last, "d1").await;
    let summary: Vec<_> = one_by_one
        .iter()
        .map(|r| {
            (
                r.bucket.as_str(),
                r.key.as_str(),
                r.version,
                r.data.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("afk", "s-5", 1, json!({"status": "afk"})),
            ("vim", "s-6", 1, json!({"file": "c.rs"})),
            ("vim", "s-1", 2, json!({"file": "a2.rs"})),
        ]
    );
    assert_eq!(one_by_one[0].bucket_type, "afkstatus");
    assert_eq!(one_by_one[0].client, "aw-watcher-afk");
    let together = build(&env, &TestDb::create().await.unwrap(), 100, last, "d1").await;
    assert_eq!(together, one_by_one);

    // Member m2 erased: a rebuild keeps the event without its data.
    env.store
        .erase_person(&tok("acme"), &tok("m2"))
        .await
        .unwrap();
    let erased = build(&env, &TestDb::create().await.unwrap(), 100, last, "d2").await;
    assert_eq!(erased.len(), 1);
    assert_eq!(
        (erased[0].key.as_str(), erased[0].data.as_ref()),
        ("s-1", None)
    );
}
