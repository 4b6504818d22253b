//! Data keys under the key-encryption key, against a real nats-server: the
//! bucket's raw bytes hold no key, a wrong or missing KEK opens nothing, a
//! bucket from before keys were wrapped is wrapped at the first open, and a
//! rewrap moves every key to the current KEK.

mod common;

use std::sync::Arc;

use common::*;
use trackhrs_kek::Keyring;
use trackhrs_nats::keys::{KEK_CHECK, slot};
use trackhrs_nats::{EventStore, StoreConfig};

fn ring(text: &str) -> Arc<Keyring> {
    Arc::new(Keyring::from_text(text).unwrap())
}

/// Every stored message of the key bucket: (key, raw message bytes as
/// stored, value).
async fn raw_bucket(client: &async_nats::Client) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("KV_trackhrs_keys").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let key = msg
            .subject
            .as_str()
            .strip_prefix("$KV.trackhrs_keys.")
            .unwrap()
            .to_owned();
        let mut raw = msg.subject.as_bytes().to_vec();
        raw.extend_from_slice(format!("{:?}", msg.headers).as_bytes());
        raw.extend_from_slice(&msg.payload);
        out.push((key, raw, msg.payload.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_bucket_holds_no_key_and_opens_only_under_its_kek() {
    let server = trackhrs_harness::NatsServer::start().await.unwrap();
    let kek = ring(&Keyring::generate());
    let config = StoreConfig::with_kek(kek.clone());
    let client = server.connect().await.unwrap();
    trackhrs_nats::provision(&client, &config).await.unwrap();
    let store = EventStore::open(client.clone(), config).await.unwrap();
    run_org(&store, create_org(5), "c1").await;
    run_org(&store, invite("m1"), "c2").await;

    let entries = raw_bucket(&client).await;
    let people: Vec<_> = entries.iter().filter(|(k, ..)| k != KEK_CHECK).collect();
    assert_eq!(people.len(), 2, "the owner's key and m1's");
    for (key, raw, value) in people {
        assert_eq!(
            trackhrs_kek::wrapped_under(value),
            Some(kek.current()),
            "{key}"
        );
        // The key itself (id and AES key), unwrapped here, is nowhere in
        // what the server stores.
        let material = kek.unwrap(&slot(key), value).unwrap();
        assert_eq!(material.len(), 40);
        for secret in [&material[..], &material[8..], &material[..8]] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret),
                "{key}: key material in the bucket's raw bytes"
            );
        }
    }
    let org = load_org(&store, "org").await;
    assert_eq!(org.version, 2, "the data still opens under the KEK");
    drop(store);

    // Another KEK: the store does not open, and says why.
    let wrong = EventStore::open(
        server.connect().await.unwrap(),
        StoreConfig::with_kek(ring(&Keyring::generate())),
    )
    .await
    .err()
    .expect("opened under a wrong KEK");
    assert!(
        wrong.to_string().contains("cannot be unwrapped")
            && wrong.to_string().contains("key-encryption key"),
        "{wrong}"
    );
    // None: it says what to set.
    let none = EventStore::open(server.connect().await.unwrap(), StoreConfig::default())
        .await
        .err()
        .expect("opened without a KEK")
        .to_string();
    assert!(none.contains("TRACKHRS_KEK_FILE"), "{none}");
    let values = |e: Vec<(String, Vec<u8>, Vec<u8>)>| {
        e.into_iter().map(|(k, _, v)| (k, v)).collect::<Vec<_>>()
    };
    assert_eq!(
        values(raw_bucket(&client).await),
        values(entries),
        "the refused opens wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_in_the_clear_are_wrapped_at_the_first_open_and_rewrap_follows_the_kek() {
    let server = trackhrs_harness::NatsServer::start().await.unwrap();
    let client = server.connect().await.unwrap();
    let old = Keyring::generate();
    let config = StoreConfig::with_kek(ring(&old));
    trackhrs_nats::provision(&client, &config).await.unwrap();
    // A bucket as it was before keys were wrapped: material in the clear.
    let js = async_nats::jetstream::new(client.clone());
    let bucket = js.get_key_value("trackhrs_keys").await.unwrap();
    let mut material = vec![9u8; 8];
    material.extend_from_slice(&[42u8; 32]);
    bucket.put("legacy", material.clone().into()).await.unwrap();

    let store = EventStore::open(client.clone(), config).await.unwrap();
    let stored = bucket.get("legacy").await.unwrap().unwrap();
    assert!(trackhrs_kek::wrapped_under(&stored).is_some(), "wrapped");
    let keys = store
        .keys()
        .key_for_read("any-org", "legacy")
        .await
        .unwrap();
    assert!(
        keys.by_id("0909090909090909").is_some(),
        "the same key, now wrapped"
    );
    run_org(&store, create_org(5), "c1").await;

    // A new KEK first in the ring, the old one still there: the rewrap
    // moves every key (the check entry too) under the new one.
    let new = Keyring::generate();
    let both = ring(&format!("{}\n{}", new.as_str(), old.as_str()));
    let rotated = EventStore::open(client.clone(), StoreConfig::with_kek(both.clone()))
        .await
        .unwrap();
    let done = rotated.keys().rewrap().await.unwrap();
    assert_eq!(done.rewrapped, 3, "legacy, the owner's key, the check");
    assert_eq!(rotated.keys().rewrap().await.unwrap().current, 3);
    for (key, _, value) in raw_bucket(&client).await {
        if let Some(id) = trackhrs_kek::wrapped_under(&value) {
            let latest = bucket.entry(&key).await.unwrap().unwrap().value;
            if latest == value {
                assert_eq!(id, both.current(), "{key}");
            }
        }
    }
    // Only the new KEK is needed from now on.
    let reopened = EventStore::open(client, StoreConfig::with_kek(ring(&new)))
        .await
        .unwrap();
    assert_eq!(load_org(&reopened, "org").await.version, 1);
    assert!(
        reopened
            .keys()
            .key_for_read("any-org", "legacy")
            .await
            .unwrap()
            .by_id("0909090909090909")
            .is_some()
    );
}
