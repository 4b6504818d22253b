//! The event store against a real nats-server: append, load, concurrency,
//! idempotency, immutability, undecodable messages and crashes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use prost::Message as _;
use trackhrs_domain::Aggregate;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_domain::personal::PersonalData;
use trackhrs_harness::{NatsOptions, NatsServer};
use trackhrs_nats::{EventStore, Loaded, StoreConfig, StoreError};
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

async fn decide_and_append(
    store: &EventStore,
    org: &str,
    id: &str,
    cmd: <Organization as Aggregate>::Command,
    command_id: &str,
) -> Result<trackhrs_nats::Appended, StoreError> {
    let loaded = store
        .load_fresh::<Organization>(&tok(org), &tok(id))
        .await?;
    let events = loaded.state.handle(cmd).expect("command accepted");
    store
        .append(&tok(org), &tok(id), &loaded, events, &meta(command_id))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_commits_load_back_with_their_envelopes_and_stream_sequence() {
    let (_server, store) = start().await;
    let first = decide_and_append(&store, "acme", "org", create_org(5), "cmd-1")
        .await
        .unwrap();
    assert_eq!(
        (first.first_version, first.last_version, first.duplicate),
        (1, 1, false)
    );
    let second = decide_and_append(&store, "acme", "org", invite("m1"), "cmd-2")
        .await
        .unwrap();
    assert_eq!(second.last_version, 2);
    assert!(second.position > first.position);

    let loaded = load_org(&store, "org").await;
    assert_eq!((loaded.version, loaded.position), (2, second.position));
    assert_eq!(loaded.state.active_members(), 2);
    assert_eq!(
        loaded.state.members[&tok("m1")].email.value(),
        Some("m1@acme.test")
    );

    // Readers see every commit with its global stream sequence and full envelope.
    let mut log = read_log(&store).await;
    let c1 = log.next().await.unwrap().commit.unwrap();
    let c2 = log.next().await.unwrap().commit.unwrap();
    assert_eq!(
        (c1.stream_sequence, c2.stream_sequence),
        (first.position, second.position)
    );
    assert_eq!(c2.subject, "evt.acme.organization.org");
    assert_eq!(
        (
            c2.org_id.as_str(),
            c2.aggregate_type.as_str(),
            c2.aggregate_id.as_str()
        ),
        ("acme", "organization", "org")
    );
    assert_eq!(
        (c2.command_id.as_str(), c2.actor.as_str()),
        ("cmd-2", "user:test")
    );
    assert_eq!(
        (c2.correlation_id.as_str(), c2.causation_id.as_str()),
        ("cmd-2", "cmd-2")
    );
    assert!(c2.recorded_at_micros > 0);
    let e = &c2.events[0];
    assert_eq!(
        (e.event_type.as_str(), e.schema_version, e.aggregate_version),
        ("MemberInvited", 2, 2)
    );
    assert_eq!(e.payload["email"]["v"], "m1@acme.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_64_racers_from_one_version_exactly_one_wins() {
    let (_server, store) = start().await;
    decide_and_append(&store, "acme", "org", create_org(100), "create")
        .await
        .unwrap();
    let base = load_org(&store, "org").await;
    let base = Arc::new(base);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let events = base.state.handle(invite(&format!("m{i}"))).unwrap();
            store
                .append(
                    &tok("acme"),
                    &tok("org"),
                    &base,
                    events,
                    &meta(&format!("invite-{i}")),
                )
                .await
        }));
    }
    let mut wins = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                assert_eq!(a.last_version, 2);
                wins += 1;
            }
            Err(StoreError::Conflict { expected, .. }) => {
                assert_eq!(expected, base.position);
                conflicts += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 63));
    let loaded = load_org(&store, "org").await;
    assert_eq!(loaded.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_is_stored_once_and_retries_get_the_original_result() {
    let (_server, store) = start().await;
    decide_and_append(&store, "acme", "org", create_org(100), "create")
        .await
        .unwrap();
    let base = load_org(&store, "org").await;
    let events = base.state.handle(invite("m1")).unwrap();

    // Sequential retry from the same (now stale) state: JetStream's duplicate window.
    let first = append_org(&store, "org", &base, events.clone(), "same")
        .await
        .unwrap();
    let again = append_org(&store, "org", &base, events.clone(), "same")
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(
        (again.position, again.last_version),
        (first.position, first.last_version)
    );

    // Retry from the fresh state: the aggregate remembers its recent command ids.
    let fresh = load_org(&store, "org").await;
    assert_eq!(
        fresh.committed("same").map(|a| a.position),
        Some(first.position)
    );

    // Concurrent: 8 copies of one command race; one commit, the same answer for all.
    let base2: Arc<Loaded<Organization>> = Arc::new(fresh);
    let events2 = base2.state.handle(invite("m2")).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, base2, events2) = (store.clone(), base2.clone(), events2.clone());
        tasks.push(tokio::spawn(async move {
            append_org(&store, "org", &base2, events2, "concurrent")
                .await
                .unwrap()
        }));
    }
    let mut results = BTreeSet::new();
    let mut originals = 0;
    for t in tasks {
        let a = t.await.unwrap();
        originals += usize::from(!a.duplicate);
        results.insert((a.position, a.first_version, a.last_version));
    }
    assert_eq!(originals, 1);
    assert_eq!(
        results.len(),
        1,
        "every caller sees the same result: {results:?}"
    );
    let loaded = load_org(&store, "org").await;
    assert_eq!(loaded.version, 3, "create + m1 + m2, each stored once");
}

/// A runtime client (user `trackhrs` of `infra/nats/accounts.conf`) that
/// reports the server's errors, permission violations included.
async fn runtime_reporting_errors(
    server: &NatsServer,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(
            "trackhrs".into(),
            trackhrs_harness::nats::TEST_PASSWORD.into(),
        )
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, rx)
}

/// Sends one JetStream API request and returns the server's permission
/// error naming its subject; fails the test if the server answers instead
/// (the request was allowed) or says nothing within 10 s.
async fn refused(
    client: &async_nats::Client,
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    subject: &str,
    body: serde_json::Value,
) -> String {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, body.to_string().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(error) = errors.recv() => {
                if error.contains(subject) {
                    return error;
                }
            }
            Some(reply) = replies.next() => panic!(
                "{subject} was allowed; the server answered {}",
                String::from_utf8_lossy(&reply.payload)
            ),
            () = &mut deadline => panic!("{subject}: no permission error within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_identity_cannot_change_or_destroy_the_event_log_or_the_keys() {
    let server = NatsServer::start_with(NatsOptions {
        accounts: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = StoreConfig::with_kek(trackhrs_harness::test_kek());
    trackhrs_nats::provision(&server.connect_provisioner().await.unwrap(), &config)
        .await
        .unwrap();
    // The runtime opens the provisioned store (it checks, it does not
    // change), and cannot provision itself.
    let runtime = server.connect().await.unwrap();
    let store = EventStore::open(runtime.clone(), config.clone())
        .await
        .unwrap();
    assert!(trackhrs_nats::provision(&runtime, &config).await.is_err());
    let done = decide_and_append(&store, "acme", "org", create_org(5), "create")
        .await
        .unwrap();
    let admin = async_nats::jetstream::new(server.connect_admin().await.unwrap());
    let count = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let mut stream = admin.get_stream(name).await.unwrap();
            stream.info().await.unwrap().state.messages
        }
    };
    let (events_before, keys_before) = (
        count("TRACKHRS_EVENTS").await,
        count("KV_trackhrs_keys").await,
    );
    assert!(keys_before > 0, "the owner's data key is stored");

    let events_config = admin
        .get_stream("TRACKHRS_EVENTS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    let changed = |change: fn(&mut async_nats::jetstream::stream::Config)| {
        let mut c = events_config.clone();
        change(&mut c);
        serde_json::to_value(c).unwrap()
    };
    let (client, mut errors) = runtime_reporting_errors(&server).await;
    let calls = [
        (
            "$JS.API.STREAM.UPDATE.TRACKHRS_EVENTS",
            changed(|c| c.max_messages = 1),
        ),
        (
            "$JS.API.STREAM.UPDATE.TRACKHRS_EVENTS",
            changed(|c| c.subjects = vec!["other.>".into()]),
        ),
        (
            "$JS.API.STREAM.UPDATE.TRACKHRS_EVENTS",
            changed(|c| {
                c.deny_delete = false;
                c.deny_purge = false;
            }),
        ),
        (
            "$JS.API.STREAM.DELETE.TRACKHRS_EVENTS",
            serde_json::json!({}),
        ),
        (
            "$JS.API.STREAM.MSG.DELETE.TRACKHRS_EVENTS",
            serde_json::json!({ "seq": done.position }),
        ),
        (
            "$JS.API.STREAM.PURGE.TRACKHRS_EVENTS",
            serde_json::json!({}),
        ),
        (
            "$JS.API.STREAM.PURGE.KV_trackhrs_keys",
            serde_json::json!({}),
        ),
        (
            "$JS.API.STREAM.MSG.DELETE.KV_trackhrs_keys",
            serde_json::json!({ "seq": 1 }),
        ),
        (
            "$JS.API.STREAM.DELETE.KV_trackhrs_keys",
            serde_json::json!({}),
        ),
        (
            "$JS.API.STREAM.UPDATE.KV_trackhrs_keys",
            serde_json::json!({ "name": "KV_trackhrs_keys", "max_msgs": 0 }),
        ),
        (
            "$JS.API.STREAM.CREATE.SHADOW",
            serde_json::json!({ "name": "SHADOW", "subjects": ["evt.>"] }),
        ),
        (
            "$JS.API.STREAM.PURGE.KV_trackhrs_snapshots",
            serde_json::json!({}),
        ),
        (
            "$JS.API.STREAM.SNAPSHOT.TRACKHRS_EVENTS",
            serde_json::json!({ "deliver_subject": "_INBOX.snapshot" }),
        ),
        (
            "$JS.API.STREAM.RESTORE.TRACKHRS_EVENTS",
            serde_json::json!({ "config": { "name": "TRACKHRS_EVENTS" } }),
        ),
        (
            "$JS.API.STREAM.PEER.REMOVE.TRACKHRS_EVENTS",
            serde_json::json!({ "peer": "any" }),
        ),
        (
            "$JS.API.STREAM.LEADER.STEPDOWN.TRACKHRS_EVENTS",
            serde_json::json!({}),
        ),
        ("$JS.API.META.LEADER.STEPDOWN", serde_json::json!({})),
        (
            "$JS.API.SERVER.REMOVE",
            serde_json::json!({ "peer": "any" }),
        ),
        ("$JS.API.ACCOUNT.PURGE.TRACKHRS", serde_json::json!({})),
    ];
    for (subject, body) in calls {
        let error = refused(&client, &mut errors, subject, body).await;
        assert!(
            error.to_lowercase().contains("permissions violation"),
            "{subject}: {error}"
        );
    }
    // Publishing to the key bucket is allowed (keys are created so), but a
    // rollup that would purge every key is refused by the bucket itself.
    let mut rollup = async_nats::HeaderMap::new();
    rollup.insert("Nats-Rollup", "all");
    let rolled = async_nats::jetstream::new(runtime.clone())
        .publish_with_headers("$KV.trackhrs_keys.intruder", rollup, "x".into())
        .await
        .unwrap()
        .await;
    assert!(rolled.is_err(), "a rollup of the key bucket was accepted");
    assert_eq!(
        count("TRACKHRS_EVENTS").await,
        events_before,
        "no event lost"
    );
    assert_eq!(count("KV_trackhrs_keys").await, keys_before, "no key lost");
    let stream = admin.get_stream("TRACKHRS_EVENTS").await.unwrap();
    assert_eq!(stream.cached_info().config, events_config, "unchanged");
    let loaded = load_org(&store, "org").await;
    assert_eq!(loaded.version, 1, "history intact");

    // Even the admin, who may delete streams, cannot purge or delete messages:
    // the stream itself denies it, and that cannot be switched off.
    assert!(stream.purge().await.is_err(), "admin purge");
    assert!(
        stream.delete_message(done.position).await.is_err(),
        "admin delete"
    );
    let mut lifted = events_config;
    lifted.deny_purge = false;
    lifted.deny_delete = false;
    assert!(
        admin.update_stream(lifted).await.is_err(),
        "denials cannot be lifted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_that_could_lose_events_is_neither_provisioned_over_nor_opened() {
    let server = NatsServer::start().await.unwrap();
    let config = StoreConfig::with_kek(trackhrs_harness::test_kek());
    // An operator created the stream by hand with an age limit.
    let mut lossy = trackhrs_nats::provision::events_stream_config(&config);
    lossy.max_age = Duration::from_secs(30 * 86_400);
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    js.create_stream(lossy).await.unwrap();

    let client = server.connect().await.unwrap();
    let refused = trackhrs_nats::provision(&client, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("max_age") && refused.contains("may already have lost events"),
        "{refused}"
    );
    let mut stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
    assert!(
        !stream.info().await.unwrap().config.max_age.is_zero(),
        "left as it was for the operator"
    );
    assert!(
        js.get_key_value("trackhrs_keys").await.is_err(),
        "nothing else was provisioned"
    );
    let not_opened = EventStore::open(client, config).await.err().unwrap();
    assert!(not_opened.to_string().contains("max_age"), "{not_opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_nobody_provisioned_is_not_opened_and_says_what_to_run() {
    let server = NatsServer::start().await.unwrap();
    let client = server.connect().await.unwrap();
    let err = EventStore::open(
        client.clone(),
        StoreConfig::with_kek(trackhrs_harness::test_kek()),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("trackhrs provision"), "{err}");
    let js = async_nats::jetstream::new(client);
    assert!(
        js.get_stream("TRACKHRS_EVENTS").await.is_err(),
        "opening created nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_too_large_is_refused_as_such_and_nothing_is_stored() {
    let (_server, store) = start().await;
    // Over the stream's 4 MiB message limit (the server refuses it), and
    // over the connection's 8 MB payload limit (refused before sending).
    for (i, bytes) in [5usize << 20, 9 << 20].into_iter().enumerate() {
        let owner = tok("olive");
        let event = OrgEvent::OrganizationCreated {
            name: "x".repeat(bytes),
            owner: owner.clone(),
            owner_email: PersonalData::new(owner.clone(), "olive@acme.test"),
            owner_name: PersonalData::new(owner, "Olive"),
            seats: 1,
        };
        let id = format!("huge{i}");
        let refused = append_org(
            &store,
            &id,
            &Loaded::default(),
            vec![event],
            &format!("h{i}"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&refused, StoreError::Encode(m) if m.contains("too large")),
            "{bytes} bytes: {refused:?}"
        );
        let loaded = load_org(&store, &id).await;
        assert_eq!((loaded.version, loaded.position), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_named_by_subject_and_sequence_and_never_skipped() {
    let (_server, store) = start().await;
    let js = async_nats::jetstream::new(store.client().clone());
    let ok = decide_and_append(&store, "acme", "org", create_org(5), "create")
        .await
        .unwrap();
    // Garbage bytes on one aggregate.
    let garbage = js
        .publish(
            "evt.acme.organization.broken",
            "not protobuf \u{1}\u{2}".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A well-formed commit with an event type nobody knows, on another.
    let unknown = Commit {
        command_id: "x".into(),
        org_id: "acme".into(),
        aggregate_type: "organization".into(),
        aggregate_id: "future".into(),
        events: vec![EventEnvelope {
            event_type: "OrganizationTeleported".into(),
            schema_version: 1,
            aggregate_version: 1,
            payload: b"{}".to_vec(),
        }],
        ..Default::default()
    };
    let unknown_ack = js
        .publish(
            "evt.acme.organization.future",
            unknown.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let after = decide_and_append(&store, "acme", "org", invite("m1"), "after")
        .await
        .unwrap();

    let err = store
        .load_fresh::<Organization>(&tok("acme"), &tok("broken"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Decode { sequence, .. } if sequence == garbage.sequence));
    assert!(text.contains("evt.acme.organization.broken"), "{text}");
    let err = store
        .load_fresh::<Organization>(&tok("acme"), &tok("future"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OrganizationTeleported") && err.contains(&unknown_ack.sequence.to_string()),
        "{err}"
    );

    // The reader reports the bad message in its place and goes on.
    let mut log = read_log(&store).await;
    let items: Vec<_> = (&mut log).take(4).collect().await;
    assert_eq!(
        items[0].commit.as_ref().unwrap().stream_sequence,
        ok.position
    );
    match &items[1].commit {
        Err(StoreError::Decode {
            subject, sequence, ..
        }) => {
            assert_eq!(
                (subject.as_str(), *sequence),
                ("evt.acme.organization.broken", garbage.sequence)
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // Generic decoding does not need to know event types: it shows what is stored.
    assert_eq!(
        items[2].commit.as_ref().unwrap().events[0].event_type,
        "OrganizationTeleported"
    );
    assert_eq!(
        items[3].commit.as_ref().unwrap().stream_sequence,
        after.position
    );
    assert_eq!(items[3].pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_appends_keeps_whole_commits_and_never_lies() {
    /// Appends acknowledged before the kill: enough for several batches per
    /// writer, however fast or slow the machine.
    const ACKED_BEFORE_KILL: usize = 100;
    let mut server = NatsServer::start_with(NatsOptions {
        sync_always: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = StoreConfig {
        ack_timeout: Duration::from_secs(2),
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &config).await.unwrap();
    let store = EventStore::open(client, config).await.unwrap();
    for a in 0..20 {
        decide_and_append(
            &store,
            "acme",
            &format!("o{a}"),
            create_org(50),
            &format!("create-{a}"),
        )
        .await
        .unwrap();
    }
    // Each writer appends 3-event commits to its own aggregate until the
    // server dies, counting what was acknowledged.
    let (acks, mut acks_seen) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let mut writers = Vec::new();
    for a in 0..20 {
        let store = store.clone();
        let acks = acks.clone();
        writers.push(tokio::spawn(async move {
            let id = format!("o{a}");
            let mut acked = Vec::new();
            let mut loaded: Loaded<Organization> =
                store.load_fresh(&tok("acme"), &tok(&id)).await.unwrap();
            for n in 0.. {
                let events = vec![
                    OrgEvent::SeatsChanged { seats: 60 + n },
                    OrgEvent::SeatsChanged { seats: 61 + n },
                    OrgEvent::SeatsChanged { seats: 62 + n },
                ];
                let command_id = format!("{id}-{n}");
                match store
                    .append(&tok("acme"), &tok(&id), &loaded, events, &meta(&command_id))
                    .await
                {
                    Ok(a) => {
                        acked.push((command_id, a.position));
                        acks.send_modify(|n| *n += 1);
                        loaded = store.load(&tok("acme"), &tok(&id)).await.unwrap();
                    }
                    // No other writer exists: report it with what the log
                    // holds once the server is back.
                    Err(e @ StoreError::Conflict { .. }) => {
                        return (acked, Some(format!("{command_id}: {e}")));
                    }
                    Err(_) => return (acked, None),
                }
            }
            (acked, None)
        }));
    }
    // The watch's value stays locked while its `Ref` lives: keep only whether
    // the count was reached, or writers would block on their next ack.
    let reached = tokio::time::timeout(
        Duration::from_secs(60),
        acks_seen.wait_for(|n| *n >= ACKED_BEFORE_KILL),
    )
    .await
    .is_ok_and(|seen| seen.is_ok());
    assert!(
        reached,
        "{ACKED_BEFORE_KILL} appends acknowledged before the kill"
    );
    server.kill();
    let mut acked = Vec::new();
    let mut conflicts = Vec::new();
    for w in writers {
        let (a, conflict) = w.await.unwrap();
        conflicts.extend(conflict.map(|c| (a.clone(), c)));
        acked.push(a);
    }
    assert!(acked.iter().map(Vec::len).sum::<usize>() >= ACKED_BEFORE_KILL);

    server.restart().await.unwrap();
    let store = open_store(&server).await;
    // Every commit in the log, in log order.
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
    let log: Vec<(String, u64, usize)> = read_log(&store)
        .await
        .take(total as usize)
        .map(|item| {
            let c = item.commit.unwrap();
            (c.command_id, c.stream_sequence, c.events.len())
        })
        .collect()
        .await;
    assert!(
        conflicts.is_empty(),
        "a conflict without another writer: {conflicts:?}; stored: {log:?}"
    );
    let mut stored = std::collections::BTreeMap::new();
    for (command_id, position, events) in &log {
        let first = stored.insert(command_id.as_str(), (*position, *events));
        assert!(first.is_none(), "{command_id} stored twice: {log:?}");
    }
    for (a, acked) in acked.iter().enumerate() {
        let loaded: Loaded<Organization> = store
            .load_fresh(&tok("acme"), &tok(&format!("o{a}")))
            .await
            .unwrap();
        assert_eq!(
            (loaded.version - 1) % 3,
            0,
            "only whole 3-event commits: v{}",
            loaded.version
        );
        assert!(
            loaded.version > 3 * acked.len() as u64,
            "every acknowledged commit survived"
        );
        for (command_id, position) in acked {
            assert_eq!(
                stored.get(command_id.as_str()),
                Some(&(*position, 3)),
                "{command_id}"
            );
        }
    }
}

/// The snapshot of `subject` in the KV bucket, if one was written: its
/// version, and how many were written (the entry's revision: the bucket
/// holds this one key).
async fn snapshot_of(kv: &async_nats::jetstream::kv::Store, subject: &str) -> Option<(u64, u64)> {
    let entry = kv.entry(subject).await.unwrap()?;
    let snapshot: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    Some((snapshot["version"].as_u64().unwrap(), entry.revision))
}

/// Appends one commit of 5 events to `acme/big` from the cached state.
async fn append_five(store: &EventStore, n: u32) {
    let loaded: Loaded<Organization> = store.load(&tok("acme"), &tok("big")).await.unwrap();
    let events = (0..5)
        .map(|i| OrgEvent::SeatsChanged { seats: n * 10 + i })
        .collect();
    store
        .append(
            &tok("acme"),
            &tok("big"),
            &loaded,
            events,
            &meta(&format!("c{n}")),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_many_events_are_snapshotted_every_few_commits_not_after_each() {
    let server = NatsServer::start().await.unwrap();
    let config = StoreConfig {
        snapshot_every: 4,
        snapshot_min_commits: 3,
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &config).await.unwrap();
    let store = EventStore::open(client.clone(), config.clone())
        .await
        .unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(&config.snapshot_bucket)
        .await
        .unwrap();
    let subject = EventStore::subject::<Organization>(&tok("acme"), &tok("big"));
    // Snapshots are written off the command's path: wait for the expected
    // one, then a little longer for an unexpected one to show.
    let settled = async |expected: Option<(u64, u64)>| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while snapshot_of(&kv, &subject).await != expected && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        snapshot_of(&kv, &subject).await
    };
    // Every commit holds 5 events, more than `snapshot_every`: the third
    // commit is the first snapshotted.
    for n in 1..=3 {
        append_five(&store, n).await;
        let expected = (n == 3).then_some((15, 1));
        assert_eq!(settled(expected).await, expected, "after commit {n}");
    }
    // Back to back, each append before the last snapshot's write is done:
    // the sixth and ninth commits only.
    for n in 4..=9 {
        append_five(&store, n).await;
    }
    assert_eq!(settled(Some((45, 3))).await, Some((45, 3)));
    // A replica that loads from the snapshot counts commits from it.
    let other = EventStore::open(server.connect().await.unwrap(), config)
        .await
        .unwrap();
    let fresh: Loaded<Organization> = other.load(&tok("acme"), &tok("big")).await.unwrap();
    let cached: Loaded<Organization> = store.load(&tok("acme"), &tok("big")).await.unwrap();
    assert_eq!((fresh.version, &fresh.state), (45, &cached.state));
    for n in 10..=11 {
        append_five(&other, n).await;
        assert_eq!(
            settled(Some((45, 3))).await,
            Some((45, 3)),
            "after commit {n}"
        );
    }
    append_five(&other, 12).await;
    assert_eq!(settled(Some((60, 4))).await, Some((60, 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_at_a_time_and_passes_on_when_it_is_not_renewed() {
    use trackhrs_nats::lease::Lease;
    let server = NatsServer::start().await.unwrap();
    let config = StoreConfig {
        lease_ttl: Duration::from_secs(1),
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &config).await.unwrap();
    let store = EventStore::open(client, config).await.unwrap();
    let mut a = Lease::open(&store, "job", "a").await.unwrap();
    let mut b = Lease::open(&store, "job", "b").await.unwrap();
    assert!(a.hold().await, "a takes the free lease");
    assert!(!b.hold().await, "b cannot while a holds it");
    // a renews within the time to live, several times: b never gets it.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(a.hold().await, "a renews");
        assert!(!b.hold().await, "b waits");
    }
    // a stops renewing: the lease expires and b takes it; a has lost it.
    let mut taken = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if b.hold().await {
            taken = true;
            break;
        }
    }
    assert!(taken, "b never took the expired lease");
    assert!(!a.hold().await, "a lost the lease to b");
    assert!(b.hold().await, "b renews");
}
