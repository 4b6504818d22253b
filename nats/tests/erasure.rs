//! Crypto-shredding end to end: personal data never reaches the log in clear
//! text, and erasing a person makes it unreadable everywhere while every event
//! still loads.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use trackhrs_domain::Aggregate;
use trackhrs_domain::organization::Organization;
use trackhrs_harness::wait_until;
use trackhrs_nats::{EventStore, Loaded, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_person_erases_their_data_everywhere_and_keeps_the_log() {
    let server = trackhrs_harness::NatsServer::start().await.unwrap();
    // Snapshot after every commit, so snapshots are exercised too.
    let config = StoreConfig {
        snapshot_every: 1,
        snapshot_min_commits: 1,
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &config).await.unwrap();
    let replica_a = EventStore::open(client, config.clone()).await.unwrap();
    let replica_b = EventStore::open(server.connect().await.unwrap(), config)
        .await
        .unwrap();

    run_org(&replica_a, create_org(5), "c1").await;
    run_org(&replica_a, invite("m1"), "c2").await;

    // Nothing personal is stored in clear text, not in events, not in snapshots.
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    for stream_name in ["TRACKHRS_EVENTS", "KV_trackhrs_snapshots"] {
        let mut stream = js.get_stream(stream_name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                let raw = String::from_utf8_lossy(&msg.payload).to_string();
                for secret in ["acme.test", "Olive Owner", "Name of m1"] {
                    assert!(
                        !raw.contains(secret),
                        "{secret} in clear text in {stream_name}#{seq}"
                    );
                }
            }
        }
    }

    // Both replicas read the data (and cache keys and states).
    for replica in [&replica_a, &replica_b] {
        let loaded: Loaded<Organization> = replica.load(&tok("acme"), &tok("org")).await.unwrap();
        assert_eq!(
            loaded.state.members[&tok("m1")].email.value(),
            Some("m1@acme.test")
        );
    }

    replica_a
        .erase_person(&tok("acme"), &tok("m1"))
        .await
        .unwrap();

    let check = |loaded: &Loaded<Organization>| {
        let m1 = &loaded.state.members[&tok("m1")];
        let owner = &loaded.state.members[&tok("owner")];
        m1.email.is_erased()
            && m1.name.as_ref().is_some_and(|n| n.is_erased())
            && m1.active
            && owner.email.value() == Some("olive@acme.test")
            && loaded.version == 2
    };
    let fresh = load_org(&replica_a, "org").await;
    assert!(
        check(&fresh),
        "the erasing replica, through the snapshot: {fresh:?}"
    );
    let cached: Loaded<Organization> = replica_a.load(&tok("acme"), &tok("org")).await.unwrap();
    assert!(check(&cached), "the erasing replica's cache: {cached:?}");
    // The other replica learns of the erasure by watching the key bucket.
    let seen = wait_until(Duration::from_secs(5), || async {
        let loaded: Loaded<Organization> = replica_b.load(&tok("acme"), &tok("org")).await.ok()?;
        check(&loaded).then_some(())
    })
    .await;
    assert!(seen.is_some(), "replica B still shows erased data");

    // A full replay from the log, without the snapshot, shows the same.
    let fresh_config = StoreConfig {
        snapshot_bucket: "trackhrs_snapshots_empty".into(),
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &fresh_config)
        .await
        .unwrap();
    let replay = EventStore::open(client, fresh_config).await.unwrap();
    let replayed = load_org(&replay, "org").await;
    assert!(check(&replayed), "{replayed:?}");

    // An auditor's generic read shows the erased field as null, the rest intact.
    let mut log = read_log(&replay).await;
    let _created = log.next().await.unwrap().commit.unwrap();
    let invited = log.next().await.unwrap().commit.unwrap();
    let payload = &invited.events[0].payload;
    assert!(payload["email"]["v"].is_null());
    assert_eq!(payload["email"]["$pd"], "m1");
    assert_eq!(payload["role"], "employee");

    // Erasure is final: later commands and snapshots create no new key for
    // the erased person, and new personal data about them is refused.
    let loaded = load_org(&replica_a, "org").await;
    let seats = trackhrs_domain::organization::OrgEvent::SeatsChanged { seats: 9 };
    append_org(&replica_a, "org", &loaded, vec![seats], "c3")
        .await
        .expect("a command without personal data still works, and its snapshot too");
    let loaded = load_org(&replica_a, "org").await;
    let about_m1 = trackhrs_domain::organization::OrgEvent::MemberInvited {
        member: tok("m9"),
        email: trackhrs_domain::PersonalData::new(tok("m1"), "again@acme.test"),
        name: None,
        role: trackhrs_domain::organization::Role::Employee,
    };
    let refused = replica_a
        .append(
            &tok("acme"),
            &tok("org"),
            &loaded,
            vec![about_m1],
            &meta("c4"),
        )
        .await;
    assert!(
        matches!(refused, Err(trackhrs_nats::StoreError::Erased(ref who)) if who == "m1"),
        "{refused:?}"
    );
    let keys = js.get_key_value("trackhrs_keys").await.unwrap();
    let m1 = trackhrs_nats::keys::entry_name("acme", "m1");
    assert_eq!(keys.get(&m1).await.unwrap(), None, "no new key for m1");
}

/// Creates organization `org` (aggregate "org") with member `m1` and `m2`.
async fn org_with_members(store: &EventStore, org: &str) {
    for (i, cmd) in [create_org(5), invite("m1"), invite("m2")]
        .into_iter()
        .enumerate()
    {
        let loaded: Loaded<Organization> = store.load_fresh(&tok(org), &tok("org")).await.unwrap();
        let events = loaded.state.handle(cmd).unwrap();
        store
            .append(
                &tok(org),
                &tok("org"),
                &loaded,
                events,
                &meta(&format!("{org}-{i}")),
            )
            .await
            .unwrap();
    }
}

/// Member `person`'s e-mail address in `org` as a fresh read opens it.
async fn email_of(store: &EventStore, org: &str, person: &str) -> Option<String> {
    let loaded: Loaded<Organization> = store.load_fresh(&tok(org), &tok("org")).await.unwrap();
    loaded.state.members[&tok(person)]
        .email
        .value()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_org_and_person_and_older_keys_by_person_seal_nothing_new() {
    let (server, store) = start().await;
    // m2's key from before keys were scoped: named by the person id alone.
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    let bucket = js.get_key_value("trackhrs_keys").await.unwrap();
    let mut material = vec![9u8; 8];
    material.extend_from_slice(&[42u8; 32]);
    let wrapped = trackhrs_harness::test_kek()
        .wrap(&trackhrs_nats::keys::slot("m2"), &material)
        .unwrap();
    bucket.put("m2", wrapped.into()).await.unwrap();

    // The same person ids in two orgs: a key each, m2's old one beside.
    org_with_members(&store, "acme").await;
    org_with_members(&store, "globex").await;
    let key_id = async |org: &str, person: &str| {
        let keys = store.keys().key_for_read(org, person).await.unwrap();
        keys.scoped().map(|k| k.id.clone())
    };
    let (acme_m1, globex_m1) = (key_id("acme", "m1").await, key_id("globex", "m1").await);
    assert!(acme_m1.is_some() && globex_m1.is_some() && acme_m1 != globex_m1);
    for org in ["acme", "globex"] {
        let keys = store.keys().key_for_read(org, "m2").await.unwrap();
        assert!(
            keys.by_id("0909090909090909").is_some(),
            "the old key still opens"
        );
        assert!(
            keys.scoped().is_some(),
            "new data is sealed under a scoped key"
        );
        assert_eq!(
            email_of(&store, org, "m2").await.as_deref(),
            Some("m2@acme.test")
        );
    }

    // Erasing m1 from acme leaves globex's m1 readable.
    store.erase_person(&tok("acme"), &tok("m1")).await.unwrap();
    assert_eq!(email_of(&store, "acme", "m1").await, None);
    assert_eq!(
        email_of(&store, "globex", "m1").await.as_deref(),
        Some("m1@acme.test")
    );
    // Erasing m2 from acme destroys the old key too; globex's m2 is still
    // read and written under its own key.
    store.erase_person(&tok("acme"), &tok("m2")).await.unwrap();
    assert_eq!(email_of(&store, "acme", "m2").await, None);
    assert_eq!(bucket.get("m2").await.unwrap(), None);
    assert_eq!(
        email_of(&store, "globex", "m2").await.as_deref(),
        Some("m2@acme.test")
    );
    store.keys().key_for_write("globex", "m2").await.unwrap();
    // Nothing makes acme's m2 a key again.
    assert!(matches!(
        store.keys().key_for_write("acme", "m2").await,
        Err(trackhrs_nats::StoreError::Erased(_))
    ));
    // A store opened later reads the same.
    let reopened = open_store(&server).await;
    assert_eq!(email_of(&reopened, "acme", "m1").await, None);
    assert_eq!(
        email_of(&reopened, "globex", "m1").await.as_deref(),
        Some("m1@acme.test")
    );
    assert_eq!(
        email_of(&reopened, "globex", "m2").await.as_deref(),
        Some("m2@acme.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_subject_naming_no_valid_person_does_not_stop_the_store_from_opening() {
    let (server, _store) = start().await;
    // Published around the store: the log keeps it for ever.
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    js.publish("evt.acme.erasure.a:b", "junk".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reopened = EventStore::open(
        server.connect().await.unwrap(),
        StoreConfig::with_kek(trackhrs_harness::test_kek()),
    )
    .await;
    assert!(reopened.is_ok(), "{:?}", reopened.err());
}
