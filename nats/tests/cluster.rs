//! The event store on a 3-node JetStream cluster with replicated streams:
//! appends keep working and nothing acknowledged is lost when a node dies.

mod common;

use common::*;
use trackhrs_domain::Aggregate;
use trackhrs_domain::organization::Organization;
use trackhrs_harness::NatsCluster;
use trackhrs_nats::{EventStore, Loaded, StoreConfig, provision};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_store_survives_the_loss_of_one_node() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let config = StoreConfig {
        replicas: 3,
        ..StoreConfig::with_kek(trackhrs_harness::test_kek())
    };
    let client = async_nats::connect(cluster.addrs()).await.unwrap();
    // Provisioning waits for the cluster's meta leader, which may take a moment.
    let provisioned = trackhrs_harness::wait_until(std::time::Duration::from_secs(30), || async {
        provision(&client, &config).await.ok()
    })
    .await;
    assert!(provisioned.is_some(), "provisioning on the cluster");
    let info = async_nats::jetstream::new(client.clone())
        .get_stream("TRACKHRS_EVENTS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    let store = EventStore::open(client, config.clone()).await.unwrap();

    let run = |store: EventStore, cmd, id: &'static str| async move {
        let loaded: Loaded<Organization> = store.load_fresh(&tok("acme"), &tok("org")).await?;
        // A retry of an append whose acknowledgement was lost gets its original result.
        if let Some(done) = loaded.committed(id) {
            return Ok(done);
        }
        let events = loaded.state.handle(cmd).expect("command accepted");
        store
            .append(&tok("acme"), &tok("org"), &loaded, events, &meta(id))
            .await
    };
    run(store.clone(), create_org(10), "c1").await.unwrap();
    run(store.clone(), invite("m1"), "c2").await.unwrap();

    // Kill a node that is not the one this client is connected to.
    let connected = store.client().server_info().port;
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.port() != connected)
        .unwrap();
    cluster.nodes[victim].kill();

    let appended = trackhrs_harness::wait_until(std::time::Duration::from_secs(30), || {
        let store = store.clone();
        async move { run(store, invite("m2"), "c3").await.ok() }
    })
    .await
    .expect("appends continue with 2 of 3 nodes");
    assert_eq!(appended.last_version, 3);
    let loaded: Loaded<Organization> = store.load_fresh(&tok("acme"), &tok("org")).await.unwrap();
    assert_eq!((loaded.version, loaded.state.active_members()), (3, 3));
}
