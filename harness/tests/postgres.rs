//! The PostgreSQL side of the harness: a fresh database per test, on a
//! reachable server or on a private cluster started with initdb (as root
//! too); a port that another cluster holds is reported, never used.

use trackhrs_harness::pg::Durability;
use trackhrs_harness::{HarnessError, PgServer, TestDb};

async fn roundtrip(db: &TestDb) {
    let client = db.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_test_gets_its_own_database() {
    let a = TestDb::create().await.unwrap();
    let b = TestDb::create().await.unwrap();
    assert_ne!(a.name(), b.name());
    roundtrip(&a).await;
    roundtrip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cluster_starts_when_asked_even_as_root() {
    let db = TestDb::create_private().await.unwrap();
    roundtrip(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_cluster_is_reported_not_used() {
    let holder = PgServer::start_private().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = PgServer::start_in(
        &dir.path().join("pgdata"),
        holder.port(),
        Durability::Throwaway,
    )
    .await;
    assert!(
        matches!(started, Err(HarnessError::PortTaken { port, .. }) if port == holder.port()),
        "a second cluster on port {}: {:?}",
        holder.port(),
        started.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_its_port_taken_while_it_was_down() {
    let mut server = PgServer::start_private().await.unwrap();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let holder = PgServer::start_in(
        &dir.path().join("pgdata"),
        server.port(),
        Durability::Throwaway,
    )
    .await
    .unwrap();
    let restarted = server.restart(Durability::Throwaway).await;
    assert!(
        matches!(restarted, Err(HarnessError::PortTaken { .. })),
        "restarted onto the port another cluster holds: {:?}",
        restarted.err()
    );

    drop(holder);
    server.restart(Durability::Throwaway).await.unwrap();
}
