//! Group commit against a real nats-server: concurrent appends to different
//! aggregates are stored as atomic batches, every caller gets its own
//! position, and a batch holding a conflict falls back without losing or
//! doubling anything.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use common::*;
use futures::StreamExt;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_harness::{NatsOptions, NatsServer};
use trackhrs_nats::{EventStore, Loaded, StoreError};

/// Appends `event` to `id` as if it were a new aggregate (expected position 0).
async fn append_new(
    store: &EventStore,
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
    let server = NatsServer::start().await.unwrap();
    // No snapshots, so the loads below read what the log holds.
    let config = trackhrs_nats::StoreConfig {
        snapshot_every: u64::MAX,
        ..trackhrs_nats::StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let store = EventStore::provision_and_open(server.connect().await.unwrap(), config)
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

/// Every acknowledged append, checked against what the log holds at its
/// position. An append that went out in an atomic batch gets a position
/// computed from the batch's acknowledgement, so a wrong computation shows
/// here as another commit (or none) at the position its caller was given,
/// where reading each aggregate back would only check its last commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_position_holds_its_own_commit() {
    const APPENDERS: u32 = 200;
    const COMMITS: u32 = 10;
    let server = NatsServer::start_with(NatsOptions {
        sync_always: true,
        ..Default::default()
    })
    .await
    .unwrap();
    // Four stores on four connections, as four gateway replicas would
    // append: their batches and lone appends reach the stream interleaved.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(open_store(&server).await);
    }
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let store = stores[a as usize % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("p{a}");
            let subject = EventStore::subject::<Organization>(&tok("acme"), &tok(&id));
            let mut loaded = Loaded::default();
            let mut acked = Vec::new();
            for n in 0..COMMITS {
                // One to three events, so versions and positions move apart.
                let events = (0..=n % 3)
                    .map(|i| OrgEvent::SeatsChanged { seats: n * 10 + i })
                    .collect();
                let command_id = format!("{id}-{n}");
                let done = append_org(&store, &id, &loaded, events, &command_id)
                    .await
                    .unwrap();
                let commit = Stored {
                    subject: subject.clone(),
                    command_id,
                    versions: (done.first_version, done.last_version),
                };
                acked.push((done.position, commit));
                loaded = store.load(&tok("acme"), &tok(&id)).await.unwrap();
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }

    let stored = stored_commits(&stores[0]).await;
    for (position, commit) in &acked {
        assert_eq!(
            stored.get(position),
            Some(commit),
            "acknowledged at {position}"
        );
    }
    assert_eq!(stored.len(), acked.len(), "every commit stored once");
    let batches: u64 = stores
        .iter()
        .map(|s| s.group_commit_stats().batches.load(Ordering::Relaxed))
        .sum();
    assert!(batches > 0, "the appends went out in batches");
}

/// What a commit in the log is, for comparing with what its caller was told.
#[derive(Debug, PartialEq)]
struct Stored {
    subject: String,
    command_id: String,
    /// First and last aggregate version of its events.
    versions: (u64, u64),
}

/// Every commit in the log, by stream sequence.
async fn stored_commits(store: &EventStore) -> BTreeMap<u64, Stored> {
    let js = async_nats::jetstream::new(store.client().clone());
    let total = js
        .get_stream("TRACKHRS_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    read_log(store)
        .await
        .take(total as usize)
        .map(|item| {
            let c = item.commit.unwrap();
            let versions = (
                c.events.first().unwrap().aggregate_version,
                c.events.last().unwrap().aggregate_version,
            );
            let commit = Stored {
                subject: c.subject,
                command_id: c.command_id,
                versions,
            };
            (c.stream_sequence, commit)
        })
        .collect()
        .await
}
