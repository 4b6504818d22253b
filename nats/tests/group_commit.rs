//! Group commit against a real nats-server: concurrent appends to different
//! aggregates are stored as atomic batches, every caller gets its own
//! position, and a batch holding a conflict falls back without losing or
//! doubling anything.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use trackhrs_domain::organization::OrgEvent;
use trackhrs_nats::{Loaded, StoreError};

/// Appends `event` to `id` as if it were a new aggregate (expected position 0).
async fn append_new(
    store: &trackhrs_nats::EventStore,
    id: &trackhrs_domain::Token,
    event: OrgEvent,
    command_id: &str,
) -> Result<trackhrs_nats::Appended, StoreError> {
    append_org(
        store,
        id.as_str(),
        &Loaded::default(),
        vec![event],
        command_id,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_batches_and_each_gets_its_own_position() {
    let (_server, store) = start().await;
    let mut tasks = Vec::new();
    for a in 0..400 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = tok(&format!("a{a}"));
            let event = OrgEvent::SeatsChanged { seats: a };
            let done = append_new(&store, &id, event, &format!("c{a}"))
                .await
                .unwrap();
            (a, done)
        }));
    }
    let mut positions = Vec::new();
    for t in tasks {
        let (a, done) = t.await.unwrap();
        let loaded = load_org(&store, &format!("a{a}")).await;
        assert_eq!(
            (loaded.position, loaded.version, loaded.state.seats),
            (done.position, 1, a)
        );
        positions.push(done.position);
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(
        positions.len(),
        400,
        "every append has its own stream sequence"
    );
    let stats = store.group_commit_stats();
    assert!(stats.batches.load(Ordering::Relaxed) > 0, "{stats:?}");
    assert!(stats.batched_appends.load(Ordering::Relaxed) > stats.batches.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commits_are_published_on_their_own() {
    let server = trackhrs_harness::NatsServer::start().await.unwrap();
    // No snapshots, so the loads below read what the log holds.
    let config = trackhrs_nats::StoreConfig {
        snapshot_every: u64::MAX,
        ..Default::default()
    };
    let store =
        trackhrs_nats::EventStore::provision_and_open(server.connect().await.unwrap(), config)
            .await
            .unwrap();
    // 40 commits of 3,000 events each (about 110 KB, well over
    // MAX_GROUPED_BYTES) at once: each is stored whole at its own position,
    // and none joins a batch. With the bypass disabled, most were batched.
    let mut tasks = Vec::new();
    for a in 0..40u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let events = (0..3000)
                .map(|i| OrgEvent::SeatsChanged {
                    seats: a * 10_000 + i,
                })
                .collect();
            let id = tok(&format!("big{a}"));
            let done = append_org(
                &store,
                id.as_str(),
                &Loaded::default(),
                events,
                &format!("b{a}"),
            )
            .await
            .unwrap();
            (a, done)
        }));
    }
    for t in tasks {
        let (a, done) = t.await.unwrap();
        let loaded = load_org(&store, &format!("big{a}")).await;
        assert_eq!(
            (loaded.position, loaded.version, loaded.state.seats),
            (done.position, 3000, a * 10_000 + 2999)
        );
    }
    let stats = store.group_commit_stats();
    assert_eq!(
        stats.batched_appends.load(Ordering::Relaxed),
        0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_inside_a_batch_fails_only_its_own_append() {
    let (_server, store) = start().await;
    // 300 appends to new aggregates race with 100 duplicates of the same
    // first version on aggregate "x": exactly one of those may win.
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = if i % 4 == 0 {
                tok("x")
            } else {
                tok(&format!("n{i}"))
            };
            let event = OrgEvent::SeatsChanged { seats: i };
            let result = append_new(&store, &id, event, &format!("k{i}")).await;
            (i, result)
        }));
    }
    let mut x_wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(done)) if i % 4 == 0 => {
                x_wins += 1;
                assert_eq!(load_org(&store, "x").await.position, done.position);
            }
            (i, Ok(done)) => assert_eq!(
                load_org(&store, &format!("n{i}")).await.position,
                done.position
            ),
            (i, Err(StoreError::Conflict { .. })) if i % 4 == 0 => {}
            (i, other) => panic!("append {i}: {other:?}"),
        }
    }
    assert_eq!(x_wins, 1);
    assert_eq!(load_org(&store, "x").await.version, 1);
    let fallbacks = store.group_commit_stats().fallbacks.load(Ordering::Relaxed);
    assert!(
        fallbacks > 0,
        "a batch with a stale append was refused and retried one by one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_refused_batches_at_once_all_get_an_answer() {
    let (_server, store) = start().await;
    for a in 0..50 {
        let id = tok(&format!("h{a}"));
        let event = OrgEvent::SeatsChanged { seats: 1 };
        append_new(&store, &id, event, &format!("first{a}"))
            .await
            .unwrap();
    }
    // Every append below is stale, so every batch is refused and falls back:
    // more appends awaiting acknowledgement than async-nats allows in flight.
    let mut tasks = Vec::new();
    for i in 0..6_000 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = tok(&format!("h{}", i % 50));
            let event = OrgEvent::SeatsChanged { seats: 2 };
            append_new(&store, &id, event, &format!("stale{i}")).await
        }));
    }
    let answered = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut conflicts = 0;
        for t in tasks {
            if let Err(StoreError::Conflict { .. }) = t.await.unwrap() {
                conflicts += 1;
            }
        }
        conflicts
    })
    .await
    .expect("every append is answered; nothing hangs");
    assert_eq!(answered, 6_000);
    assert!(store.group_commit_stats().fallbacks.load(Ordering::Relaxed) > 0);
}
